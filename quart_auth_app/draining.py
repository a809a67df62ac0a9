"""Draining on SIGTERM (SPEC §13), the launcher's side and the workers'.

A Hypercorn worker left SIGTERM at its default, so a SIGTERM to the process group (what
systemd and `docker stop` send) killed the workers mid-request. Here every worker, once
serving, answers SIGTERM by turning /readyz to 503 (`metrics.begin_draining`); the launcher
passes the signal to its workers, waits `--drain-delay` seconds (default 0: long enough for
a load balancer's probe to see the 503) while they still serve, then starts Hypercorn's
graceful shutdown (in-flight requests finish, up to `graceful_timeout`). While it drains,
every HTTP/1 answer says `Connection: close` and the connection ends with it: a client (a
balancer's keep-alive pool) learns in the answer itself that the connection is done,
instead of finding it closed under a request it has just sent when the shutdown closes
idle connections (a 502 for a POST, which no one may replay). A request still running when
`graceful_timeout` runs out is answered 503 with Retry-After, not Hypercorn's 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from quart import Quart, Request, Response

from .metrics import DRAINING, begin_draining
from .requestpath import on_response

SIGTERM = signal.SIGTERM


def drain_on_sigterm(app: Quart, launcher: int) -> None:
    """In a worker the launcher spawned: SIGTERM drains (here and, through the launcher, in
    every worker); while draining, HTTP/1 answers close their connection; a request cut
    when the graceful shutdown runs out is a 503."""

    @app.before_serving
    async def listen() -> None:
        def drain() -> None:
            begin_draining(app)
            with contextlib.suppress(ProcessLookupError):
                os.kill(launcher, SIGTERM)  # a worker's own SIGTERM drains all

        asyncio.get_running_loop().add_signal_handler(SIGTERM, drain)
        # Blocked by the launcher while it spawned this process: one that came meanwhile
        # is delivered now, to `drain`.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {SIGTERM})

    def close_when_draining(answered: Request, response: Response) -> None:
        if app.extensions.get(DRAINING) and answered.http_version.startswith("1"):
            response.headers["Connection"] = "close"  # HTTP/2 has no such header

    on_response(app, close_when_draining)

    app.asgi_app = unavailable_when_cut(app.asgi_app)  # type: ignore[method-assign,assignment]


CUT = [
    (b"content-type", b"application/json"),
    (b"retry-after", b"5"),
    (b"connection", b"close"),
    (b"cache-control", b"no-store"),
]
CUT_BODY = json.dumps(
    {"error": "unavailable", "message": "The server is restarting. Please try again."}
).encode()


def unavailable_when_cut(
    asgi_app: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    """A request still running when the graceful shutdown runs out (`graceful_timeout`) is
    cancelled, and Hypercorn then answers 500 for it. Answer 503 with Retry-After instead:
    nothing went wrong with the request, the server is going away (a balancer may retry it
    elsewhere if it is idempotent)."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await asgi_app(scope, receive, send)
        except asyncio.CancelledError:
            if scope["type"] == "http":
                # Hypercorn refuses a start once an answer began (that one is cut as it is).
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.start", "status": 503, "headers": CUT})
                    await send({"type": "http.response.body", "body": CUT_BODY})
            raise

    return guarded


class Drain:
    """The launcher's SIGTERM: the workers drain, then, after `delay`, Hypercorn stops."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.processes: list[BaseProcess] = []
        self.begun = False
        self.stop: Callable[..., Any] | None = None  # Hypercorn's own SIGTERM handler
        self.handler = self.signalled  # one bound method, so it is recognised when installed

    def populate(self, populate: Callable[..., None]) -> Callable[..., None]:
        """Hypercorn's `_populate`, with SIGTERM held back while workers are spawned: they
        inherit the blocked signal and take it once they can drain (`create_app`)."""

        def spawning(processes: list[BaseProcess], *args: Any) -> None:
            self.processes = processes
            held = signal.pthread_sigmask(signal.SIG_BLOCK, {SIGTERM})
            try:
                populate(processes, *args)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)

        return spawning

    def wait(self, wait: Callable[..., Any]) -> Callable[..., Any]:
        """Hypercorn's `wait`, called right after it installs its SIGTERM handler: that
        handler (which stops the workers at once) is put behind the drain."""

        def waiting(*args: Any, **kwargs: Any) -> Any:
            stop = signal.getsignal(SIGTERM)
            if callable(stop) and stop is not self.handler:
                self.stop = stop
                signal.signal(SIGTERM, self.handler)
            return wait(*args, **kwargs)

        return waiting

    def signalled(self, signum: int, frame: FrameType | None) -> None:
        stop = self.stop
        if self.begun or stop is None:
            return
        self.begun = True
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, SIGTERM)
        if self.delay <= 0:
            stop(signum, frame)
        else:
            threading.Timer(self.delay, stop, (signum, frame)).start()
