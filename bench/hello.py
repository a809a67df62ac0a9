"""A bare ASGI "hello" app: the ceiling Hypercorn reaches with the same hypercorn.toml.

Served by `bench.launch`: each worker logs its requests with the app launcher's access
logger (set below, when the worker loads this module, as `quart_auth_app.serve` does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.config import Config

from quart_auth_app.serve import RedactingLogger

Config.logger_class = RedactingLogger

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"6")]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Answer every HTTP request with 200 "hello"; accept lifespan events."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": b"hello\n"})


def create_quart_hello() -> Any:
    """A bare Quart app answering "hello" on every path: what the framework alone costs."""
    from quart import Quart

    quart = Quart(__name__)

    @quart.route("/", defaults={"path": ""})
    @quart.route("/<path:path>")
    async def hello(path: str) -> str:
        return "hello\n"

    return quart
