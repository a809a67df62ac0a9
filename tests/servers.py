"""Start the real Hypercorn with hypercorn.toml on a free loopback port, and stop it by PID."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
HYPERCORN = Path(sys.executable).parent / "hypercorn"
APP = "quart_auth_app:create_app()"

# Hypercorn's log lines: "[time] [PID] [LEVEL] message"; access lines follow hypercorn.toml's
# access_log_format, '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'.
LOG_LINE = re.compile(r"^\[[^\]]+\] \[(?P<pid>\d+)\] \[\w+\] (?P<message>.*)$")
ACCESS = re.compile(r'^(?P<client>\S+) "(?P<method>\S+) (?P<path>\S+) \S+" (?P<status>\d{3}) ')


@dataclass(frozen=True)
class Access:
    """One access-log line: which worker answered whom, and how."""

    pid: int
    client: str
    method: str
    path: str
    status: int


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group we started (the Hypercorn parent and its workers)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)

    def log_text(self) -> str:
        """Everything the server and its workers wrote so far."""
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        """PIDs of the workers that announced "Running on" (each worker logs it once)."""
        pids = set()
        for line in self.log_text().splitlines():
            match = LOG_LINE.match(line)
            if match and match["message"].startswith("Running on "):
                pids.add(int(match["pid"]))
        return pids

    def accesses(self) -> list[Access]:
        """The access log, parsed (plain lines, or JSON ones with LOG_FORMAT=json)."""
        found = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry["logger"] == "hypercorn.access":
                    fields = (entry["client"], entry["method"], entry["path"], entry["status"])
                    found.append(Access(entry["pid"], *fields))
                continue
            match = LOG_LINE.match(line)
            access = ACCESS.match(match["message"]) if match else None
            if match and access:
                found.append(
                    Access(
                        int(match["pid"]),
                        access["client"],
                        access["method"],
                        access["path"],
                        int(access["status"]),
                    )
                )
        return found


def _limit_open_files(soft: int) -> None:
    """In the child before exec: start it with this soft limit on open files."""
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )


def start(
    tmp_path: Path,
    env: Mapping[str, str],
    workers: int | None = 2,
    port: int | None = None,
    app: str = APP,
    open_files: int | None = None,
    args: tuple[str, ...] = (),
) -> Server:
    """Start Hypercorn as users run it (hypercorn.toml) and wait until /healthz answers.

    `workers=None` leaves the worker count to hypercorn.toml.
    """
    port = port or free_port()
    log = tmp_path / f"hypercorn-{port}.log"
    full_env = {**os.environ, "QUART_BCRYPT_ROUNDS": "4", **env}
    with log.open("ab") as out:
        workers_args = [] if workers is None else ["--workers", str(workers)]
        # This app through its launcher (Hypercorn plus an exit-status fix), as users run it.
        launcher = [sys.executable, "-m", "quart_auth_app.serve"] if app == APP else [HYPERCORN]
        process = subprocess.Popen(
            [
                *map(str, launcher),
                "--config",
                str(ROOT / "hypercorn.toml"),
                "--bind",
                f"127.0.0.1:{port}",
                *workers_args,
                *args,
                *([] if app == APP else [app]),
            ],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if open_files is None else partial(_limit_open_files, open_files),
        )
    server = Server(process, port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hypercorn exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                _await_access(server, "/healthz")
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"hypercorn did not start: {log.read_text()[-2000:]}")


def _await_access(server: Server, path: str, timeout: float = 5.0) -> None:
    """Wait for the access line of a request just answered (a worker writes it after the
    response), so log lines a test counts from now on never include the readiness probe."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(a.path == path for a in server.accesses()):
        time.sleep(0.05)


@contextmanager
def running(
    tmp_path: Path, env: Mapping[str, str], workers: int | None = 2, **kwargs: object
) -> Iterator[Server]:
    """A started server that is stopped (SIGTERM, then SIGKILL) when the block ends."""
    server = start(tmp_path, env, workers, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGTERM)
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


def client(
    server: Server, fresh_connections: bool = False, timeout: float = 30
) -> httpx.AsyncClient:
    """An HTTP client for many independent visitors: it never keeps a cookie it is sent.

    With `fresh_connections` every request opens its own connection, so requests
    spread over the workers the way separate browsers' do.
    """
    keepalive = 0 if fresh_connections else None
    return httpx.AsyncClient(
        base_url=server.url,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=keepalive),
        follow_redirects=False,
    )


async def bounded(
    calls: Sequence[Callable[[], Awaitable[T]]], concurrency: int, deadline: float = 60
) -> list[T | BaseException]:
    """Run the calls at most `concurrency` at a time; each result or the exception it raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    async with asyncio.timeout(deadline):
        return await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
