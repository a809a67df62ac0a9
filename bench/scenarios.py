"""The scenarios of SPEC §10 (issues 5 and 13), run interleaved and repeated against live
servers."""

from __future__ import annotations

import os
import secrets
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quart_auth_app.config import DEFAULTS
from quart_auth_app.passwords import check_password, hash_password

from . import prepare
from .measure import Sample, measure, measure_pair
from .server import APP, FLOOR, HELLO, QUART_HELLO, Server, page_status, start
from .settings import RATIO_JUDGED_UP_TO, Settings

Log = Callable[[str], None]


@dataclass
class Bench:
    """Servers, databases and settings of one bench run, and what it measured."""

    settings: Settings
    workdir: Path
    log: Log
    servers: dict[str, Server] = field(default_factory=dict)
    databases: dict[str, Path] = field(default_factory=dict)
    tokens: dict[str, Path] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rounds(self) -> int:
        return self.settings.rounds

    @property
    def cost(self) -> int:
        return self.settings.bcrypt_rounds or int(DEFAULTS["BCRYPT_ROUNDS"])

    def record(self, key: str, round_: int, **values: Any) -> None:
        self.samples.setdefault(key, []).append({"round": round_, **values})

    def env(self, database: Path) -> dict[str, str]:
        env = {
            "QUART_DATABASE": str(database),
            "QUART_THROTTLE_ENABLED": "false",
            "QUART_SECRET_KEY": secrets.token_urlsafe(32),
        }
        if self.settings.bcrypt_rounds is not None:
            env["QUART_BCRYPT_ROUNDS"] = str(self.settings.bcrypt_rounds)
        return env


def setup(bench: Bench) -> None:
    """Prepare the small and the large database, then start the hellos, the floor, the app
    and the app on the large database."""
    s = bench.settings
    for name, filler in (("small", 0), ("large", s.large_sessions - s.sessions)):
        path = bench.workdir / f"{name}.sqlite3"
        started = time.monotonic()
        prepare.create(path, s.users, bench.cost)
        tokens = prepare.add_sessions(path, s.users, s.sessions, filler)
        bench.databases[name] = path
        bench.tokens[name] = prepare.write_tokens(bench.workdir / f"{name}.tokens", tokens)
        stored = prepare.count(path, "SELECT count(*) FROM sessions")
        took = time.monotonic() - started
        bench.log(f"prepared {name}: {s.users} users, {stored} sessions ({took:.1f} s)")
    hello_env = bench.env(bench.workdir / "unused.sqlite3")
    bench.servers["hello"] = start("hello", HELLO, hello_env, bench.workdir)
    bench.servers["quart"] = start("quart", QUART_HELLO, hello_env, bench.workdir)
    small = bench.env(bench.databases["small"])
    bench.servers["floor"] = start("floor", FLOOR, small, bench.workdir)
    bench.servers["app"] = start("app", APP, small, bench.workdir)
    bench.servers["large"] = start("large", APP, bench.env(bench.databases["large"]), bench.workdir)
    for name, server in bench.servers.items():
        token = "small" if name != "large" else "large"
        measure(
            server, "/protected", 8, 1, script="protected.lua", args=(str(bench.tokens[token]),)
        )
        require_pages(name, server, bench.tokens[token])
        bench.log(f"started {name}: {server.url}, workers {server.workers}")


def require_pages(name: str, server: Server, tokens: Path) -> None:
    """Stop unless the server answers the prepared sessions' first and last token with its
    page: a server refusing them answers a cheap redirect, which wrk counts as an answer,
    and every ratio after it would measure the redirect."""
    known = tokens.read_text().split()
    for token in (known[0], known[-1]):
        status = page_status(server, "/protected", token)
        if status != 200:
            raise RuntimeError(f"{name}: GET /protected with a prepared session answered {status}")


def _protected(bench: Bench, name: str, connections: int, duration: int) -> Sample:
    token = "large" if name == "large" else "small"
    return measure(
        bench.servers[name],
        "/protected",
        connections,
        duration,
        script="protected.lua",
        args=(str(bench.tokens[token]),),
        timeout=bench.settings.page_timeout,
    )


def browsing(bench: Bench) -> None:
    """Scenarios 1 and 5: hello, Quart hello, /protected, /protected on a million sessions,
    and the floor (`bench/floor.py`) at the counts target 1 judges.

    The Quart hello and the app swap places every other round (A B, then B A), so a drift
    of the machine's speed within a round favours neither of them in the paired ratios;
    the floor runs between them."""
    s = bench.settings
    for round_ in range(1, s.browsing_rounds + 1):
        for connections in s.connections:
            judged = connections <= RATIO_JUDGED_UP_TO
            trio = ["quart", "floor", "app"] if judged else ["quart", "app"]
            names = ["hello", *(trio if round_ % 2 else reversed(trio))]
            names += ["large"] if connections == s.growth_connections else []
            for name in names:
                sample = _protected(bench, name, connections, s.duration)
                bench.record("protected", round_, connections=connections, **sample.to_json())
                r = sample.result
                bench.log(
                    f"round {round_} {name:5} c={connections:<5} {r.rps:8.0f} rps "
                    f"p99 {r.p99} ms errors {r.errors} wrk {sample.wrk_cores:.2f} cores"
                )
    bench.extra["peak_rss_mib"] = {
        name: server.peak_rss_mib() for name, server in bench.servers.items()
    }


def bcrypt_seconds(cost: int, checks: int = 3) -> float:
    """One core's time for one bcrypt check at `cost` (the median of a few)."""
    password_hash = hash_password(prepare.PASSWORD, cost)
    times = []
    for _ in range(checks):
        started = time.perf_counter()
        check_password(prepare.PASSWORD, password_hash)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bcrypt_rate(cost: int, seconds: float = 2.0) -> float:
    """Checks per second that one thread per core manages right now (the shared machine's
    other load included): the limit as this machine offers it at this moment."""
    password_hash = hash_password(prepare.PASSWORD, cost)
    threads = os.cpu_count() or 1
    deadline = time.monotonic() + seconds

    def work() -> int:
        done = 0
        while time.monotonic() < deadline:
            check_password(prepare.PASSWORD, password_hash)
            done += 1
        return done

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        checks = sum(pool.map(lambda _: work(), range(threads)))
    return checks / (time.monotonic() - started)


def _storm_args(bench: Bench, duration: int) -> dict[str, Any]:
    s = bench.settings
    return {
        "path": "/api/login",
        "connections": s.storm_connections,
        "duration": duration,
        "script": "login.lua",
        "args": (str(s.users), prepare.PASSWORD),
        "timeout": s.storm_timeout,
    }


def _browse_args(bench: Bench) -> dict[str, Any]:
    s = bench.settings
    return {
        "path": "/protected",
        "connections": s.browse_connections,
        "duration": s.browse_duration,
        "script": "browse.lua",
        "args": (str(bench.tokens["small"]), str(s.browse_delay_ms)),
        "timeout": s.wrk_timeout,
    }


def signing_in(bench: Bench) -> None:
    """Scenarios 2 and 3: the sign-in storm alone, then browsing alone and during a storm."""
    s = bench.settings
    app = bench.servers["app"]
    for round_ in range(1, bench.rounds + 1):
        seconds = bcrypt_seconds(bench.cost)
        limit = (os.cpu_count() or 1) / seconds
        available = bcrypt_rate(bench.cost, min(2.0, s.storm_duration / 4))
        args = _storm_args(bench, s.storm_duration)
        storm = measure(app, args.pop("path"), **args)
        app.quiesce()
        bench.record(
            "signin",
            round_,
            bcrypt_seconds=seconds,
            limit=limit,
            available=available,
            **storm.to_json(),
        )
        bench.log(
            f"round {round_} sign-in storm: {storm.result.ok_per_second:.2f}/s "
            f"(limit {limit:.2f}/s, bcrypt {seconds * 1000:.0f} ms, {available:.2f}/s in parallel) "
            f"errors {storm.result.errors}"
        )
        args = _browse_args(bench)
        alone = measure(app, args.pop("path"), **args)
        during_storm, during = measure_pair(
            app, _storm_args(bench, s.browse_duration + 2), _browse_args(bench), lead=1.0
        )
        app.quiesce()
        bench.record("browse_alone", round_, **alone.to_json())
        bench.record("browse_during", round_, **during.to_json())
        bench.record("storm_during", round_, **during_storm.to_json())
        bench.log(
            f"round {round_} browse p99 alone {alone.result.p99} ms, during storm "
            f"{during.result.p99} ms; errors {alone.result.errors}+{during.result.errors}"
        )


def signing_in_under_load(bench: Bench) -> None:
    """Scenario 7: sign-ins (one connection per bcrypt thread) while /protected saturates the
    cores; each sign-in's latency is what a person signing in on a busy site waits."""
    s = bench.settings
    app = bench.servers["app"]
    for round_ in range(1, bench.rounds + 1):
        pages = {
            "path": "/protected",
            "connections": s.loaded_connections,
            "duration": s.loaded_duration + 2,
            "script": "protected.lua",
            "args": (str(bench.tokens["small"]),),
            "timeout": s.wrk_timeout,
        }
        signins = {
            **_storm_args(bench, s.loaded_duration),
            "connections": s.loaded_signin_connections,
        }
        page_sample, signin_sample = measure_pair(app, pages, signins, lead=1.0)
        app.quiesce()
        bench.record("loaded_pages", round_, **page_sample.to_json())
        bench.record("loaded_signin", round_, **signin_sample.to_json())
        bench.log(
            f"round {round_} sign-ins under /protected at c={s.loaded_connections}: "
            f"{signin_sample.result.ok_per_second:.2f}/s p99 {signin_sample.result.p99} ms "
            f"errors {signin_sample.result.errors}; pages {page_sample.result.rps:.0f} rps "
            f"errors {page_sample.result.errors}"
        )


def signing_up(bench: Bench) -> None:
    """Scenario 4: unique sign-ups at once; every 201 must be a row, and no row twice."""
    s = bench.settings
    app, database = bench.servers["app"], bench.databases["small"]
    for round_ in range(1, bench.rounds + 1):
        prefix = f"r{round_}x{secrets.token_hex(3)}"
        out = bench.workdir / f"signup-{prefix}"
        sample = measure(
            app,
            "/api/register",
            s.signup_connections,
            s.signup_duration,
            script="register.lua",
            args=(prefix, str(out)),
            timeout=s.storm_timeout,
        )
        app.quiesce()
        created: list[str] = []
        failures: list[str] = []
        for path in bench.workdir.glob(f"signup-{prefix}-*"):
            lines = path.read_text().splitlines()
            (failures if "-failures-" in path.name else created).extend(lines)
        rows = set(prepare.emails_like(database, f"su-{prefix}-%"))
        check = {
            "successes": len(created),
            "rows": len(rows),
            "lost": len(set(created) - rows),
            "duplicates": len(created) - len(set(created)),
            "abandoned": len(rows - set(created)),  # finished after wrk hung up at its deadline
        }
        bench.record("signup", round_, **check, failures=failures[:5], **sample.to_json())
        bench.log(f"round {round_} sign-up storm: {check}, wrk errors {sample.result.errors}")
        for failure in failures[:3]:
            bench.log(f"  failed sign-up: {failure}")


def stop(bench: Bench) -> None:
    """Stop every server we started."""
    for server in bench.servers.values():
        server.stop()
