"""python -m bench.profile: py-spy every worker while wrk drives GET /protected; summarise.

Prints where the workers' CPU goes: by package (inclusive: any frame of that package on the
stack) and by function (self: the frame on top). Raw collapsed stacks go to bench/results/.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from . import prepare
from .__main__ import raise_file_limit
from .server import APP, FLOOR, HELLO, QUART_HELLO, ROOT, start
from .wrk import Wrk

PY_SPY = Path(sys.executable).parent / "py-spy"
SERVERS = {"app": APP, "floor": FLOOR, "quart": QUART_HELLO, "hello": HELLO}
PACKAGES = [
    "quart_auth_app",
    "quart_schema",
    "quart",
    "werkzeug",
    "jinja2",
    "hypercorn",
    "h11",
    "aiosqlite",
    "sqlite3",
    "logging",
    "asyncio",
    "json",
    "hashlib",
    "secrets",
]


def package(frame: str) -> str | None:
    """The package a collapsed-stack frame `func (path:line)` belongs to."""
    path = "/" + frame.rsplit("(", 1)[-1]
    for name in PACKAGES:
        if f"/{name}/" in path or f"/{name}.py" in path:
            return name
    return None


def in_thread(frames: list[str]) -> bool:
    """Whether a stack is of a helper thread (aiosqlite's, the bcrypt pool's), not the loop's."""
    return any("threading.py" in frame for frame in frames[:3])


def summarise(stacks: list[tuple[list[str], int]], top: int = 25) -> str:
    """Inclusive share per package and self share per function, as text."""
    threads = sum(count for frames, count in stacks if in_thread(frames))
    loop = [(frames, count) for frames, count in stacks if not in_thread(frames)]
    total = sum(count for _, count in loop) or 1
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in loop:
        for name in {package(f) for f in frames} - {None}:
            inclusive[str(name)] += count
        own[frames[-1]] += count
    lines = [
        f"{total} samples in the event-loop threads, {threads} in helper threads "
        "(aiosqlite, bcrypt pool; mostly waiting)",
        "",
        "event loop, inclusive by package (a frame of it anywhere on the stack):",
    ]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common()]
    lines += ["", f"event loop, self by function (top {top}):"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def read_raw(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():  # a frame's name may hold a line break: skip its halves
            stacks.append((stack.split(";"), int(count)))
    return stacks


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default="app",
        help="the app, the bare Quart hello, or the bare ASGI hello",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    raise_file_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="profile-") as workdir:
        work = Path(workdir)
        database = work / "db.sqlite3"
        prepare.create(database, 1000, 12)
        tokens = prepare.write_tokens(work / "tokens", prepare.add_sessions(database, 1000, 1000))
        env = {
            "QUART_DATABASE": str(database),
            "QUART_THROTTLE_ENABLED": "false",
            "QUART_SECRET_KEY": secrets.token_urlsafe(32),
        }
        server = start("profiled", SERVERS[args.server], env, work)
        try:
            load = Wrk(
                server.url + "/protected",
                args.connections,
                args.seconds + 4,
                script="protected.lua",
                args=(str(tokens),),
            )
            record = [str(PY_SPY), "record", "--duration", str(args.seconds), "--rate", "250"]
            record += ["--nonblocking", "--format", "raw"]
            spies = [
                subprocess.Popen(
                    [*record, "--pid", str(pid), "--output", str(work / f"{pid}.txt")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for pid in server.workers
            ]
            for spy in spies:
                spy.wait(timeout=args.seconds + 60)
            result = load.wait()
        finally:
            server.stop()
        stacks = []
        for pid in server.workers:
            raw = work / f"{pid}.txt"
            (args.out / f"profile-{args.server}-{args.connections}-{pid}.txt").write_text(
                raw.read_text()
            )
            stacks += read_raw(raw)
    print(f"wrk: {result.rps:.0f} rps, p99 {result.p99} ms, errors {result.errors}")
    print(summarise(stacks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
