"""Quart's per-request machinery, trimmed where it repeats work whose answer cannot change
(SPEC §10: a signed-in page's cost; docs/PERFORMANCE.md has the measurements).

- `ensure_async`: Quart asks, for every hook, context processor and view of every
  request, whether the function is a coroutine function (`inspect` each time, ten times
  a page). A function's answer never changes, so it is remembered.
- `make_response`: quart_schema wraps it to turn dataclasses and models into JSON; a view
  that returns a Response has nothing to convert, and Quart returns it as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from quart import Response
from werkzeug.wrappers import Response as WerkzeugResponse

if TYPE_CHECKING:
    from quart import Quart

FUNCTIONS_KEPT = 1024  # past this many distinct functions the memo starts afresh


def trim(app: Quart) -> None:
    """Install the remembered `ensure_async` and the Response shortcut of `make_response`
    (call after every extension that wraps `make_response`)."""
    ensure_async = app.ensure_async
    made: dict[Callable[..., Any], Callable[..., Awaitable[Any]]] = {}

    def remembered(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        found = made.get(func)
        if found is None:
            if len(made) >= FUNCTIONS_KEPT:
                made.clear()
            found = made[func] = ensure_async(func)
        return found

    make_response = app.make_response

    async def respond(result: Any) -> Any:
        if isinstance(result, Response | WerkzeugResponse):
            return result
        return await make_response(result)

    app.ensure_async = remembered  # type: ignore[method-assign]
    app.make_response = respond  # type: ignore[method-assign]
