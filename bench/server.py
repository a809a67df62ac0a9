"""Start Hypercorn exactly as users do (hypercorn.toml), find its workers, read their /proc."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "hypercorn.toml"
APP = "quart_auth_app:create_app()"  # started through the app's launcher, as users start it
LAUNCHER = [sys.executable, "-m", "quart_auth_app.serve"]
HELLO_LAUNCHER = [sys.executable, "-m", "bench.launch"]  # the same sockets and access log
HELLO = "bench.hello:app"
QUART_HELLO = "bench.hello:create_quart_hello()"
FLOOR = "bench.floor:create_floor()"  # target 1's floor: the work every page must do
TICK = os.sysconf("SC_CLK_TCK")


def configured_workers() -> int:
    """The worker count hypercorn.toml sets (Hypercorn's default is 1)."""
    return int(tomllib.loads(CONFIG.read_text()).get("workers", 1))


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmHWM: peak RSS, VmRSS: current RSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


@dataclass
class Server:
    """A Hypercorn parent in its own process group, and its worker processes."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    workers: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> list[float]:
        """CPU seconds of each worker so far."""
        return [cpu_seconds(pid) for pid in self.workers]

    def peak_rss_mib(self) -> list[float]:
        """Peak resident memory of each worker (VmHWM), MiB."""
        return [status_kib(pid, "VmHWM") / 1024 for pid in self.workers]

    def quiesce(self, limit: float = 30.0, busy: float = 0.05) -> float:
        """Wait until the workers are idle (queued work after a storm); return seconds waited."""
        started = time.monotonic()
        before = sum(self.cpu())
        while time.monotonic() - started < limit:
            time.sleep(0.5)
            now = sum(self.cpu())
            if now - before < busy * 0.5:
                break
            before = now
        return time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM the process group we started; SIGKILL it if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)


def page_status(server: Server, path: str, token: str) -> int:
    """The status of one GET with the session cookie `token`, a redirect not followed (wrk
    counts only statuses over 399 as errors: a redirect passes for an answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Cookie": f"session={token}"})
        return connection.getresponse().status
    finally:
        connection.close()


def _worker_pids(parent: int) -> list[int]:
    """Hypercorn's workers are spawned children; skip multiprocessing's resource tracker."""
    workers = []
    for pid in children(parent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            workers.append(pid)
    return workers


def start(name: str, app: str, env: Mapping[str, str], logdir: Path) -> Server:
    """Start Hypercorn with `--config hypercorn.toml` on a free port: the app through its
    launcher (`python -m quart_auth_app.serve`, as README says), a hello through
    `bench.launch` (the launcher's sockets and access log, nothing of the app); wait for
    /healthz."""
    expected_workers = configured_workers()
    port = free_port()
    log = logdir / f"{name}.log"
    # The access log goes to stdout: it is formatted as users run it, but not kept.
    with log.open("ab") as errors:
        options = ["--config", str(CONFIG), "--bind", f"127.0.0.1:{port}"]
        command = [*LAUNCHER, *options] if app == APP else [*HELLO_LAUNCHER, *options, app]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
    server = Server(name, process, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name}: hypercorn exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as response:
                if response.status == 200:
                    server.workers = _worker_pids(process.pid)
                    if len(server.workers) >= expected_workers:
                        return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name}: hypercorn did not start: {log.read_text()[-2000:]}")
