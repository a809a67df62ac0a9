"""Quart's per-request machinery, trimmed where it repeats work whose answer cannot change
(SPEC §10: a signed-in page's cost; docs/PERFORMANCE.md has the measurements).

- `ensure_async`: Quart asks, for every hook, context processor and view of every
  request, whether the function is a coroutine function (`inspect` each time, ten times
  a page). A function's answer never changes, so it is remembered.
- `make_response`: quart_schema wraps it to turn dataclasses and models into JSON; a view
  that returns a Response has nothing to convert, and Quart returns it as it is.
- `request.blueprints`: Quart works it out (an import statement and the endpoint split
  again) each of the three or more times a request asks; it is kept per matched rule.
- The garbage collector: a serving worker scans its youngest objects every 10,000 net
  allocations instead of 700 (`GC_THRESHOLDS`).
- After-request work: the modules that finish every response (metrics, security headers,
  draining) each register a synchronous step with `on_response`; one after-request hook
  runs them all with the request looked up once, instead of a hook each looking it up
  through the `request` proxy again and again.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from quart import Response
from quart.globals import request_ctx
from werkzeug.wrappers import Response as WerkzeugResponse

if TYPE_CHECKING:
    from quart import Quart, Request

ResponseStep = Callable[["Request", Response], None]
STEPS = "auth_response_steps"  # app.extensions key: the steps, in the order registered
FUNCTIONS_KEPT = 1024  # past this many distinct functions the memo starts afresh
# A request makes thousands of objects that reference counting frees at once; with Python's
# default (700, 10, 10) the cycle collector ran every few requests and, with hundreds in
# flight, kept walking their live objects. Only the youngest generation's threshold is
# raised: the older two still run every 10 collections, so garbage that outlived a request
# in flight is found as soon as before. bench.cpu, 20 rounds, 256 requests in flight: CPU
# per GET /protected 326-444 -> 276-298 us (docs/PERFORMANCE.md).
GC_THRESHOLDS = (10_000, 10, 10)


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


def on_response(app: Quart, step: ResponseStep) -> None:
    """Run `step(request, response)` on every response, as an after-request hook would
    (handled errors' responses included), after the steps registered before it."""
    steps: list[ResponseStep] | None = app.extensions.get(STEPS)
    if steps is None:
        steps = app.extensions[STEPS] = []

        @app.after_request
        async def finish(response: Response) -> Response:
            current = request_ctx.request
            for each in steps:
                each(current, response)
            return response

    steps.append(step)


async def collect_less() -> None:
    """A serving process runs the cycle collector less often (GC_THRESHOLDS)."""
    gc.set_threshold(*GC_THRESHOLDS)


def trim(app: Quart) -> None:
    """Install the remembered `ensure_async`, the Response shortcut of `make_response`, the
    collector's thresholds when serving and the request class remembering its blueprints
    (call after every extension that wraps `make_response` and after the request class is
    chosen)."""
    app.before_serving(collect_less)
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
