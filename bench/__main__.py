"""python -m bench [--quick] [--out DIR]: run the bench, print the table, write Markdown + JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report, scenarios, wrk
from .server import ROOT, configured_workers
from .settings import FULL, QUICK


def raise_file_limit() -> None:
    """1024 connections need more than the usual 1024 descriptors (wrk and workers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


SCENARIOS = {  # name: what runs it (in this order)
    "browsing": scenarios.browsing,  # 1 and 5
    "signing-in": scenarios.signing_in,  # 2 and 3
    "signing-up": scenarios.signing_up,  # 4
    "signing-in-under-load": scenarios.signing_in_under_load,  # 7
}


def run(quick: bool, out: Path, log: Any = print, only: list[str] | None = None) -> dict[str, Any]:
    """Run every scenario (or those in `only`), write bench-<time>.md/.json (and latest.*)
    to `out`; return the run."""
    if not wrk.available():
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    raise_file_limit()
    settings = QUICK if quick else FULL
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    clock = time.monotonic()
    mode = ("quick" if quick else "full") + ("" if only is None else "-partial")
    stem = f"bench-{started.replace(':', '')}-{mode}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        bench = scenarios.Bench(settings, Path(workdir), log)
        try:
            scenarios.setup(bench)
            for name, scenario in SCENARIOS.items():
                if only is None or name in only:
                    scenario(bench)
        finally:
            scenarios.stop(bench)
            for server_log in Path(workdir).glob("*.log"):  # the servers' error logs
                shutil.copy(server_log, out / f"{stem}-{server_log.name}")
    run_ = {
        "started": started,
        "mode": mode,
        "cpus": os.cpu_count(),
        "workers": configured_workers(),
        "bcrypt_cost": bench.cost,
        "seconds": round(time.monotonic() - clock, 1),
        "settings": dataclasses.asdict(settings),
        "samples": bench.samples,
        "peak_rss_mib": bench.extra.get("peak_rss_mib", {}),
    }
    run_["summary"] = report.summarise(run_)
    table = report.markdown(run_, run_["summary"]) + f"\nTook {run_['seconds']} s.\n"
    for name in (stem, f"latest-{run_['mode']}"):
        (out / f"{name}.md").write_text(table)
        (out / f"{name}.json").write_text(json.dumps(run_, indent=1))
    log(table)
    log(f"written to {out / stem}.md and .json")
    return run_


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable); targets of the others show as not run",
    )
    args = parser.parse_args(argv)
    run(args.quick, args.out, log=lambda line: print(line, flush=True), only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
