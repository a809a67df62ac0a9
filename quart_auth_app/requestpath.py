"""Quart's per-request machinery, trimmed where it repeats work whose answer cannot change
(SPEC §10: a signed-in page's cost; docs/PERFORMANCE.md has the measurements).

- `ensure_async`: Quart asks, for every hook, context processor and view of every
  request, whether the function is a coroutine function (`inspect` each time, ten times
  a page). A function's answer never changes, so it is remembered.
- `make_response`: quart_schema wraps it to turn dataclasses and models into JSON; a view
  that returns a Response has nothing to convert, and Quart returns it as it is.
- `request.blueprints`: Quart works it out (an import statement and the endpoint split
  again) each of the three or more times a request asks; it is kept per matched rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from quart import Response
from werkzeug.wrappers import Response as WerkzeugResponse

if TYPE_CHECKING:
    from quart import Quart, Request

FUNCTIONS_KEPT = 1024  # past this many distinct functions the memo starts afresh


def split_blueprints(name: str) -> list[str]:
    """ "a.b" -> ["a.b", "a"]: a blueprint and the blueprints it is nested in."""
    names = [name]
    while "." in name:
        name = name.rpartition(".")[0]
        names.append(name)
    return names


class BlueprintsOnce:
    """A request (mixed in before Quart's) whose `blueprints` is worked out once per rule."""

    url_rule: Any
    blueprint: str | None
    _blueprints: tuple[Any, list[str]] | None = None

    @property
    def blueprints(self) -> list[str]:
        rule = self.url_rule
        known = self._blueprints
        if known is None or known[0] is not rule:
            name = self.blueprint
            known = self._blueprints = (rule, split_blueprints(name) if name else [])
        return list(known[1])


def trim(app: Quart) -> None:
    """Install the remembered `ensure_async`, the Response shortcut of `make_response` and
    the request class remembering its blueprints (call after every extension that wraps
    `make_response` and after the request class is chosen)."""
    if not issubclass(app.request_class, BlueprintsOnce):
        mixed = type("Request", (BlueprintsOnce, app.request_class), {})
        app.request_class = cast("type[Request]", mixed)
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
