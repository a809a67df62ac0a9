"""python -m bench.cpu: CPU per request of GET /protected and of a bare Quart hello, in-process.

The ASGI apps are called directly on one asyncio event loop (no sockets, no Hypercorn), a
fixed number of requests `--concurrency` at a time, and the process's CPU time (every
thread: the event loop and aiosqlite's) is divided by the requests. Less sensitive to
other load on a shared machine than wrk's throughput, so it decides what to cut; the
bench (`python -m bench`) judges the targets. `--profile` adds cProfile's top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import prepare

Asgi = Callable[..., Any]


def scope(path: str, cookie: str) -> dict[str, Any]:
    """An HTTP/1.1 GET as Hypercorn hands it to the app."""
    return {
        "type": "http",
        "asgi": {"spec_version": "2.1", "version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:5000"),
            (b"cookie", f"session={cookie}".encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 5000),
        "extensions": {},
    }


async def call(app: Asgi, request: dict[str, Any]) -> int:
    """One request through the ASGI app; its status."""
    status = 0
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # as Hypercorn: nothing more until the client leaves
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(request, receive, send)
    return status


async def drive(
    app: Asgi, tokens: list[str], requests: int, concurrency: int
) -> tuple[float, float]:
    """CPU seconds per request for `requests` requests, `concurrency` at a time: the event
    loop's thread, and the whole process (aiosqlite's threads too)."""
    queue = iter(range(requests))
    statuses: dict[int, int] = {}

    async def worker() -> None:
        for i in queue:
            status = await call(app, scope("/protected", tokens[i % len(tokens)]))
            statuses[status] = statuses.get(status, 0) + 1

    started, loop_started = time.process_time(), time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    spent, loop_spent = time.process_time() - started, time.thread_time() - loop_started
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses: {statuses}")
    return loop_spent / requests, spent / requests


async def measure(
    database: Path,
    tokens: list[str],
    options: argparse.Namespace,
) -> None:
    from quart_auth_app import create_app

    from .hello import create_quart_hello

    os.environ["QUART_THROTTLE_ENABLED"] = "false"
    app = create_app({"DATABASE": str(database), "SECRET_KEY": secrets.token_urlsafe(32)})
    quart = create_quart_hello()
    before = _load_before(options.before)
    runs: dict[str, tuple[Asgi, Callable[[], Any]]] = {
        "Quart hello": (quart, contextlib.nullcontext),
        "app": (app, contextlib.nullcontext),
    }
    if before is not None:
        runs["app, before"] = (app, lambda: before(app))
    await app.startup()
    await quart.startup()
    try:
        for server, context in runs.values():  # warm up: templates compiled, connections open
            with context():
                await drive(server, tokens, 500, options.concurrency)
        loop: dict[str, list[float]] = {name: [] for name in runs}
        every: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(options.rounds):
            for name, (server, context) in runs.items():
                with context():
                    spent = await drive(server, tokens, options.requests, options.concurrency)
                loop[name].append(spent[0] * 1e6)
                every[name].append(spent[1] * 1e6)
        print(
            f"CPU us/request, {options.rounds} interleaved rounds of {options.requests} "
            f"requests, {options.concurrency} at a time: min / 20th percentile / median"
        )
        for name in runs:
            print(f"  {name:12} loop {_spread(loop[name])}   all threads {_spread(every[name])}")
        if options.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await drive(app, tokens, options.requests, options.concurrency)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(45)
            stats.sort_stats("cumulative").print_stats(60)
            print(out.getvalue())
    finally:
        await app.shutdown()
        await quart.shutdown()


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    fifth = ordered[len(ordered) // 5]
    return f"{ordered[0]:6.1f} / {fifth:6.1f} / {statistics.median(ordered):6.1f}"


def _load_before(path: Path | None) -> Callable[[Any], Any] | None:
    """`before(app)` from a file: a context manager putting back the code before a change,
    so the change is measured against it in the same process, interleaved."""
    if path is None:
        return None
    namespace: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["before"]  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--before", type=Path, help="a file defining before(app): see above")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cpu-") as workdir:
        database = Path(workdir) / "db.sqlite3"
        prepare.create(database, 100, 4)
        tokens = prepare.add_sessions(database, 100, 100)
        asyncio.run(measure(database, tokens, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
