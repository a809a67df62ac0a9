"""Serve the app with Hypercorn, exiting non-zero when a worker fails (SPEC §8).

`python -m quart_auth_app.serve --config hypercorn.toml [hypercorn options]` is
`hypercorn ... "quart_auth_app:create_app()"` with two fixes. First, when a worker
exits with an error (one that could not open its database, say), Hypercorn 0.18's
master stops every worker, as it should, but then returns 0: its last `_join_exited`
runs on the workers it has just asked to stop and overwrites the failure
(pgjones/hypercorn#269). A supervisor then sees a clean stop and a deployment
script carries on with a server that never served. Here the first failure is
remembered and becomes the exit status. Second, the access log leaves out the token
of a mailed link (`RedactingLogger`, SPEC §13). It also raises the open-file limit
(`raise_open_file_limit`).

Operations (SPEC §13). Each start gets a fresh private directory for the workers'
metrics (`PROMETHEUS_MULTIPROC_DIR`, exported before they are spawned, removed at exit;
a worker that exits is marked dead there). And SIGTERM drains instead of cutting: a
Hypercorn worker left SIGTERM at its default, so a SIGTERM to the process group (what
systemd and `docker stop` send) killed the workers mid-request. Here every worker,
once serving, answers SIGTERM by turning /readyz to 503 (`metrics.begin_draining`);
the launcher passes the signal to its workers, waits `--drain-delay` seconds (default
0: long enough for a load balancer's probe to see the 503) while they still serve,
then starts Hypercorn's graceful shutdown (in-flight requests finish, up to
`graceful_timeout`). While it drains, every HTTP/1 answer says `Connection: close` and the
connection ends with it: a client (a balancer's keep-alive pool) learns in the answer itself
that the connection is done, instead of finding it closed under a request it has just sent
when the shutdown closes idle connections (a 502 for a POST, which no one may replay).
The process model, for supervisors: the launcher is a master that spawns the workers
(processes of their own, with multiprocessing's resource tracker beside them); stop or kill
the whole process group (systemd: KillMode=control-group), never the launcher's PID alone,
or a worker keeps the port (deploy/systemd/quart-auth@.service).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import hypercorn.run
from hypercorn.__main__ import main as hypercorn_main
from hypercorn.config import Config
from hypercorn.logging import Logger
from prometheus_client import multiprocess
from quart import Quart, Response, request

from . import create_app as build_app
from .accesslog import AccessAtoms
from .logs import log_format, use_format
from .metrics import DRAINING, begin_draining

# The workers load the app from here, so this module's logger setting reaches them too.
APP = "quart_auth_app.serve:create_app()"
OPEN_FILES_WITHOUT_HARD_LIMIT = 65536

LAUNCHER = "QUART_AUTH_APP_LAUNCHER_PID"  # set for the workers: the launcher's PID
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
SIGTERM = signal.SIGTERM

log = logging.getLogger(__name__)
__all__ = ["RedactingLogger", "create_app", "main"]
# Paths whose last segment is a mailed link's token (SPEC §11): never written to a log (§13).
LINK_TOKEN = re.compile(r"^(/password/reset/|/email/verify/|/email/change/)[^/?\s]+")
LINK_PREFIXES = ("/password/reset/", "/email/verify/", "/email/change/")


class RedactingLogger(Logger):
    """Hypercorn's logger, with the token of a mailed link left out of the access log, in
    the format LOG_FORMAT names (`QUART_LOG_FORMAT=json`: a JSON object a line)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        use_format(log_format(), *(x for x in (self.error_logger, self.access_logger) if x))

    def atoms(self, request: Any, response: Any, request_time: float) -> Any:
        # Only the atoms the format reads (Hypercorn's copy of them all, os.environ
        # included, was a tenth of a page request's cost: docs/PERFORMANCE.md).
        return AccessAtoms(request, response, request_time, redact=without_link_tokens)


def without_link_tokens(value: str) -> str:
    """ "GET /path HTTP/1.1" or a bare path, with a mailed link's token as `[token]`."""
    if not any(prefix in value for prefix in LINK_PREFIXES):  # nearly every line: no regex
        return value
    return " ".join(LINK_TOKEN.sub(r"\1[token]", part) for part in value.split(" "))


# Each worker is a fresh process that builds its logger from the configuration after it
# loads the app, that is after importing this module (APP above).
Config.logger_class = RedactingLogger


def create_app() -> Quart:
    """The app, as a worker of this launcher serves it: draining on SIGTERM."""
    app = build_app()
    launcher = os.environ.get(LAUNCHER)
    if launcher and launcher == str(os.getppid()):  # a worker this launcher spawned

        @app.before_serving
        async def drain_on_sigterm() -> None:
            def drain() -> None:
                begin_draining(app)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(launcher), SIGTERM)  # a worker's own SIGTERM drains all

            asyncio.get_running_loop().add_signal_handler(SIGTERM, drain)
            # Blocked by the launcher while it spawned this process: one that came meanwhile
            # is delivered now, to `drain`.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {SIGTERM})

        @app.after_request
        async def close_when_draining(response: Response) -> Response:
            if app.extensions.get(DRAINING) and request.http_version.startswith("1"):
                response.headers["Connection"] = "close"  # HTTP/2 has no such header
            return response

        app.asgi_app = unavailable_when_cut(app.asgi_app)  # type: ignore[method-assign,assignment]
    return app


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


@contextlib.contextmanager
def patched(module: Any, **replacements: Any) -> Iterator[None]:
    """Replace names of `module` while the block runs, then put them back."""
    saved = {name: getattr(module, name) for name in replacements}
    for name, value in replacements.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """A fresh private directory for this start's metrics, exported to the workers."""
    path = tempfile.mkdtemp(prefix="quart_auth_app-metrics-")  # mode 0700
    os.environ[METRICS_DIR] = path
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the limit.

    Every connection holds a descriptor. With the common soft limit of 1,024, a few
    thousand idle or slow clients (each may hold its connection for the 75 s keep-alive)
    exhausted it and the server refused everyone, /healthz included. The workers inherit
    the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_WITHOUT_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def main(argv: list[str] | None = None) -> int:
    """Run Hypercorn on this app with `argv` (Hypercorn's options, and `--drain-delay
    SECONDS`); return its exit status."""
    raise_open_file_limit()
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--drain-delay", type=float, default=0.0)
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    failures: list[int] = []
    drain = Drain(ours.drain_delay)
    master: Any = hypercorn.run  # its master loop's helpers, replaced while it runs
    join_exited = master._join_exited

    with metrics_directory() as metrics_dir:

        def remembering(processes: list[BaseProcess]) -> int:
            for process in processes:  # their live gauges leave the sums (prometheus_client)
                if process.exitcode is not None and process.pid is not None:
                    multiprocess.mark_process_dead(process.pid, metrics_dir)  # type: ignore[no-untyped-call]
            status: int = join_exited(processes)
            if status != 0:
                failures.append(status)
            return status

        os.environ[LAUNCHER] = str(os.getpid())
        try:
            with patched(
                master,
                _join_exited=remembering,
                _populate=drain.populate(master._populate),
                wait=drain.wait(master.wait),
            ):
                status = hypercorn_main([*rest, APP])
        finally:
            os.environ.pop(LAUNCHER, None)
    if status == 0 and failures:
        logging.basicConfig(format="%(message)s")
        log.critical("a worker exited with status %s, so the server stopped", failures[0])
        return failures[0] if failures[0] > 0 else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
