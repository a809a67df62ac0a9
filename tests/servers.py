"""Start the real Hypercorn with hypercorn.toml on a free loopback port, and stop it by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HYPERCORN = Path(sys.executable).parent / "hypercorn"


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


def start(
    tmp_path: Path,
    env: Mapping[str, str],
    workers: int = 2,
    port: int | None = None,
    app: str = "quart_auth_app:create_app()",
) -> Server:
    """Start Hypercorn as users run it (hypercorn.toml) and wait until /healthz answers."""
    port = port or free_port()
    log = tmp_path / f"hypercorn-{port}.log"
    full_env = {**os.environ, "QUART_BCRYPT_ROUNDS": "4", **env}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                str(HYPERCORN),
                "--config",
                str(ROOT / "hypercorn.toml"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                app,
            ],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hypercorn exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"hypercorn did not start: {log.read_text()[-2000:]}")


@contextmanager
def running(
    tmp_path: Path, env: Mapping[str, str], workers: int = 2, **kwargs: object
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
