"""Run wrk, parse what it prints, and measure its own CPU time (it shares the cores)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "lua"

TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
COUNT_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}

_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.M)
_RPS = re.compile(r"^Requests/sec:\s*([\d.]+)", re.M)
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_LATENCY = re.compile(  # Thread Stats: avg, stdev, max, +/- stdev
    r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)", re.M
)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.M)


class WrkError(RuntimeError):
    """wrk failed, or printed something that is not a wrk report."""


@dataclass
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms), and every kind of error."""

    requests: int
    duration: float  # seconds, as wrk measured it
    rps: float
    latency_ms: dict[str, float] = field(default_factory=dict)  # "50", "75", "90", "99"
    max_ms: float | None = None  # the slowest answered request (timed-out ones are not in it)
    non_2xx_3xx: int = 0
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    cpu_seconds: float = 0.0  # wrk's own user+system time
    wall_seconds: float = 0.0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        """Everything that is not a 2xx/3xx answer."""
        return self.non_2xx_3xx + self.socket_errors

    @property
    def ok_per_second(self) -> float:
        """Answers with a 2xx/3xx status per second."""
        return (self.requests - self.non_2xx_3xx) / self.duration if self.duration else 0.0

    @property
    def p50(self) -> float | None:
        return self.latency_ms.get("50")

    @property
    def p99(self) -> float | None:
        return self.latency_ms.get("99")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(socket_errors=self.socket_errors, errors=self.errors)
        return data


def _seconds(value: str, unit: str) -> float:
    return float(value) * TIME_UNITS[unit] / 1e3


def parse(text: str) -> WrkResult:
    """Read wrk's report (as printed with --latency) into a WrkResult."""
    requests = _REQUESTS.search(text)
    rps = _RPS.search(text)
    if requests is None or rps is None:
        raise WrkError(f"not a wrk report: {text[-500:]!r}")
    result = WrkResult(
        requests=int(requests.group(1)),
        duration=_seconds(requests.group(2), requests.group(3)),
        rps=float(rps.group(1)),
        latency_ms={
            m.group(1): float(m.group(2)) * TIME_UNITS[m.group(3)]
            for m in _PERCENTILE.finditer(text)
        },
    )
    if latency := _LATENCY.search(text):
        result.max_ms = float(latency.group(5)) * TIME_UNITS[latency.group(6)]
    if socket := _SOCKET.search(text):
        connect, read, write, timeout = (int(g) for g in socket.groups())
        result.connect_errors, result.read_errors = connect, read
        result.write_errors, result.timeouts = write, timeout
    if non_2xx := _NON_2XX.search(text):
        result.non_2xx_3xx = int(non_2xx.group(1))
    return result


def available() -> bool:
    """Whether wrk is on PATH."""
    return shutil.which("wrk") is not None


class Wrk:
    """A running wrk process; `wait()` parses its report and adds its CPU time."""

    def __init__(
        self,
        url: str,
        connections: int,
        duration: int,
        script: str | None = None,
        args: tuple[str, ...] = (),
        threads: int = 1,
        timeout: int = 10,
    ) -> None:
        self.duration = duration
        self.timeout = timeout
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (closed in wait())
        command = [
            "wrk",
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{duration}s",
            f"--timeout={timeout}s",
            "--latency",
        ]
        if script:
            command += ["-s", str(LUA / script)]
        command.append(url)
        if args:
            command += ["--", *args]
        self.command = command
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT)

    def wait(self) -> WrkResult:
        """Wait (bounded by duration + timeout + 30 s), then parse the report."""
        deadline = self.started + self.duration + self.timeout + 30
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.process.send_signal(signal.SIGKILL)
                _, status, usage = os.wait4(self.process.pid, 0)
                break
            time.sleep(0.05)
        wall = time.monotonic() - self.started
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._out.seek(0)
        text = self._out.read().decode(errors="replace")
        self._out.close()
        if self.process.returncode != 0:
            raise WrkError(f"{' '.join(self.command)} exited {self.process.returncode}: {text}")
        result = parse(text)
        result.cpu_seconds = usage.ru_utime + usage.ru_stime
        result.wall_seconds = wall
        return result


def run(url: str, connections: int, duration: int, **kwargs: Any) -> WrkResult:
    """Run wrk to completion."""
    return Wrk(url, connections, duration, **kwargs).wait()
