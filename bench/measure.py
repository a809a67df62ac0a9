"""One measurement: a wrk run against a server, with the workers' CPU split around it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .server import Server
from .wrk import Wrk, WrkResult


@dataclass
class Sample:
    """A wrk result plus what the server's workers spent meanwhile."""

    server: str
    result: WrkResult
    worker_cpu: list[float]  # CPU seconds per worker during the run

    @property
    def busiest_share(self) -> float | None:
        """The busiest worker's share of the workers' CPU (0.5 = even on 2 workers)."""
        total = sum(self.worker_cpu)
        return max(self.worker_cpu) / total if total > 0 else None

    @property
    def wrk_cores(self) -> float:
        """wrk's CPU time per wall-clock second (1.0 = one core)."""
        wall = self.result.wall_seconds
        return self.result.cpu_seconds / wall if wall else 0.0

    @property
    def wrk_share(self) -> float | None:
        """wrk's share of the CPU that wrk and the server used together."""
        total = self.result.cpu_seconds + sum(self.worker_cpu)
        return self.result.cpu_seconds / total if total > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "wrk": self.result.to_json(),
            "worker_cpu_seconds": self.worker_cpu,
            "busiest_worker_share": self.busiest_share,
            "wrk_cores": self.wrk_cores,
            "wrk_cpu_share": self.wrk_share,
        }


def measure(server: Server, path: str, connections: int, duration: int, **kwargs: Any) -> Sample:
    """Run wrk against `server` and record the workers' CPU seconds around it."""
    before = server.cpu()
    result = Wrk(server.url + path, connections, duration, **kwargs).wait()
    after = server.cpu()
    return Sample(server.name, result, [b - a for a, b in zip(before, after, strict=True)])


def measure_pair(
    server: Server, first: dict[str, Any], second: dict[str, Any], lead: float
) -> tuple[Sample, Sample]:
    """Two wrk processes at once (the second starts `lead` seconds later)."""
    before = server.cpu()
    one = Wrk(server.url + first.pop("path"), **first)
    time.sleep(lead)
    two = Wrk(server.url + second.pop("path"), **second)
    result_two = two.wait()
    result_one = one.wait()
    after = server.cpu()
    cpu = [b - a for a, b in zip(before, after, strict=True)]
    return Sample(server.name, result_one, cpu), Sample(server.name, result_two, cpu)
