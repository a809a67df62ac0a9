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
a worker that exits is marked dead there). SIGTERM drains instead of cutting (`draining.py`).
The process model, for supervisors: the launcher is a master that spawns the workers
(processes of their own, with multiprocessing's resource tracker beside them); stop or kill
the whole process group (systemd: KillMode=control-group), never the launcher's PID alone,
or a worker keeps the port (deploy/systemd/quart-auth@.service).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

import hypercorn.run
from hypercorn.__main__ import main as hypercorn_main
from hypercorn.config import Config, Sockets
from hypercorn.logging import Logger
from prometheus_client import multiprocess
from quart import Quart

from . import create_app as build_app
from .accesslog import AccessAtoms
from .draining import Drain, drain_on_sigterm
from .logs import log_format, use_format

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
        drain_on_sigterm(app, int(launcher))
    return app


def own_sockets(populate: Callable[..., None]) -> Callable[..., None]:
    """Hypercorn's `_populate`, with listening sockets of its own for each worker it spawns.

    Hypercorn's workers share one listening socket, and asyncio accepts every connection
    waiting each time it wakes: 64 connections opened at once went to one worker in 6 of 8
    tries while the other idled, and in a third of the bench's runs at 64 connections one
    worker served over 70 % of the requests. Limiting asyncio to a few accepts a turn spread
    them but left connections waiting over 2 s at 1,024. Here each worker listens on sockets
    of its own, bound with SO_REUSEPORT (Hypercorn sets it whenever there are several
    workers), and the kernel spreads new connections over them. The launcher closes its
    copies once the worker holds them, so a worker that exits takes its sockets with it
    instead of leaving connections queued where nobody accepts them.
    """

    def spawning(
        processes: list[BaseProcess],
        config: Config,
        worker_func: Callable[..., None],
        sockets: Sockets,
        shutdown_event: Any,
        ctx: Any,
    ) -> None:
        if config.workers < 2:  # one socket, no SO_REUSEPORT: Hypercorn's way
            populate(processes, config, worker_func, sockets, shutdown_event, ctx)
            return
        for _ in range(config.workers - len(processes)):
            own = config.create_sockets()
            kwargs = {"config": config, "shutdown_event": shutdown_event, "sockets": own}
            process = ctx.Process(target=worker_func, kwargs=kwargs)
            process.daemon = config.daemon
            try:
                process.start()  # the worker's copies are made here (pickled for spawn)
                processes.append(process)
            finally:
                for sock in (*own.secure_sockets, *own.insecure_sockets, *own.quic_sockets):
                    sock.close()

    return spawning


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
                _populate=drain.populate(own_sockets(master._populate)),
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
