"""Turn the samples into medians, ratios to the ceilings, target verdicts, Markdown and JSON."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .settings import RATIO_JUDGED_UP_TO
from .stats import fmt, ratio, summary


def _by_round(samples: list[dict[str, Any]], **match: Any) -> dict[int, dict[str, Any]]:
    return {s["round"]: s for s in samples if all(s.get(k) == v for k, v in match.items())}


def _errors(samples: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for s in samples:
        for key in ("non_2xx_3xx", "connect_errors", "read_errors", "write_errors", "timeouts"):
            totals[key] += s["wrk"][key]
    return dict(totals)


def _errors_text(totals: dict[str, int]) -> str:
    socket = sum(v for k, v in totals.items() if k != "non_2xx_3xx")
    return f"{totals.get('non_2xx_3xx', 0)} / {socket}"


def cpu_per_request(sample: dict[str, Any]) -> float | None:
    """The workers' CPU seconds per answered request in one run: what limits throughput
    once the cores are saturated, and much less moved than rps by other load on the
    machine (which shares the cores by threads, not by servers)."""
    requests = sample["wrk"]["requests"]
    return sum(sample["worker_cpu_seconds"]) / requests if requests else None


def _rps_ratios(
    server: dict[int, dict[str, Any]], quart: dict[int, dict[str, Any]]
) -> list[float | None]:
    """A server's rps over the Quart hello's, round by round."""
    return [ratio(server[r]["wrk"]["rps"], quart[r]["wrk"]["rps"]) for r in server if r in quart]


def _cpu_ratios(
    server: dict[int, dict[str, Any]], quart: dict[int, dict[str, Any]]
) -> list[float | None]:
    """The Quart hello's CPU per request over a server's, round by round."""
    return [
        ratio(cpu_per_request(quart[r]), cpu_per_request(server[r])) for r in server if r in quart
    ]


def browsing(samples: list[dict[str, Any]], connections: list[int]) -> list[dict[str, Any]]:
    """Scenario 1 rows: per connection count, the app against hello, paired by round."""
    rows = []
    for c in connections:
        hello = _by_round(samples, server="hello", connections=c)
        quart = _by_round(samples, server="quart", connections=c)
        app = _by_round(samples, server="app", connections=c)
        floor = _by_round(samples, server="floor", connections=c)
        ratios = [ratio(app[r]["wrk"]["rps"], hello[r]["wrk"]["rps"]) for r in app if r in hello]
        app_samples = list(app.values())
        rows.append(
            {
                "connections": c,
                "hello_rps": summary(h["wrk"]["rps"] for h in hello.values()),
                "quart_rps": summary(q["wrk"]["rps"] for q in quart.values()),
                "ratio_to_quart": summary(_rps_ratios(app, quart)),
                "cpu_ratio_to_quart": summary(_cpu_ratios(app, quart)),
                "floor_ratio_to_quart": summary(_rps_ratios(floor, quart)),
                "floor_cpu_ratio_to_quart": summary(_cpu_ratios(floor, quart)),
                "cpu_us": summary(
                    (cpu_per_request(a) or 0) * 1e6 for a in app.values() if a["wrk"]["requests"]
                ),
                "quart_cpu_us": summary(
                    (cpu_per_request(q) or 0) * 1e6 for q in quart.values() if q["wrk"]["requests"]
                ),
                "rps": summary(a["wrk"]["rps"] for a in app_samples),
                "ratio": summary(ratios),
                "p50_ms": summary(a["wrk"]["latency_ms"].get("50") for a in app_samples),
                "p99_ms": summary(a["wrk"]["latency_ms"].get("99") for a in app_samples),
                "hello_p99_ms": summary(h["wrk"]["latency_ms"].get("99") for h in hello.values()),
                "max_ms": summary(a["wrk"].get("max_ms") for a in app_samples),
                "quart_max_ms": summary(q["wrk"].get("max_ms") for q in quart.values()),
                "errors": _errors(app_samples),
                "hello_errors": _errors(list(hello.values())),
                "quart_errors": _errors(list(quart.values())),
                "floor_errors": _errors(list(floor.values())),
                "busiest_worker_share": summary(a["busiest_worker_share"] for a in app_samples),
                "wrk_cores": summary(a["wrk_cores"] for a in app_samples),
                "wrk_cpu_share": summary(a["wrk_cpu_share"] for a in app_samples),
            }
        )
    return rows


def growth(samples: list[dict[str, Any]], connections: int) -> dict[str, Any]:
    """Scenario 5: the large database against the small one, paired by round."""
    small = _by_round(samples, server="app", connections=connections)
    large = _by_round(samples, server="large", connections=connections)
    return {
        "connections": connections,
        "small_rps": summary(s["wrk"]["rps"] for s in small.values()),
        "large_rps": summary(s["wrk"]["rps"] for s in large.values()),
        "ratio": summary(
            ratio(large[r]["wrk"]["rps"], small[r]["wrk"]["rps"]) for r in large if r in small
        ),
        "errors": _errors(list(large.values())),
    }


def signin(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Scenarios 2 and 3."""
    storms = samples.get("signin", [])

    def per_second(s: dict[str, Any]) -> float:
        w = s["wrk"]
        return (w["requests"] - w["non_2xx_3xx"]) / w["duration"] if w["duration"] else 0.0

    alone = _by_round(samples.get("browse_alone", []))
    during = _by_round(samples.get("browse_during", []))
    return {
        "bcrypt_ms": summary(s["bcrypt_seconds"] * 1000 for s in storms),
        "limit": summary(s["limit"] for s in storms),
        "per_second": summary(per_second(s) for s in storms),
        "ratio": summary(ratio(per_second(s), s["limit"]) for s in storms),
        "available": summary(s["available"] for s in storms),
        "ratio_available": summary(ratio(per_second(s), s["available"]) for s in storms),
        "p99_ms": summary(s["wrk"]["latency_ms"].get("99") for s in storms),
        "errors": _errors(storms),
        "wrk_cores": summary(s["wrk_cores"] for s in storms),
        "browse_alone_p99_ms": summary(a["wrk"]["latency_ms"].get("99") for a in alone.values()),
        "browse_during_p99_ms": summary(d["wrk"]["latency_ms"].get("99") for d in during.values()),
        "browse_p99_ratio": summary(
            ratio(during[r]["wrk"]["latency_ms"].get("99"), alone[r]["wrk"]["latency_ms"].get("99"))
            for r in during
            if r in alone
        ),
        "browse_rps_alone": summary(a["wrk"]["rps"] for a in alone.values()),
        "browse_rps_during": summary(d["wrk"]["rps"] for d in during.values()),
        "signins_during": summary(per_second(s) for s in samples.get("storm_during", [])),
        "browse_errors": _errors(list(alone.values()) + list(during.values())),
        "storm_during_errors": _errors(samples.get("storm_during", [])),
    }


def signup(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Scenario 4."""
    keys = ("successes", "rows", "lost", "duplicates", "abandoned")
    totals = {k: sum(s[k] for s in samples) for k in keys}
    return {
        "per_second": summary(s["successes"] / s["wrk"]["duration"] for s in samples),
        "p99_ms": summary(s["wrk"]["latency_ms"].get("99") for s in samples),
        "errors": _errors(samples),
        **totals,
    }


def loaded(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Scenario 7: sign-ins while /protected saturates the cores."""
    signins = samples.get("loaded_signin", [])
    pages = samples.get("loaded_pages", [])

    def per_second(s: dict[str, Any]) -> float:
        w = s["wrk"]
        return (w["requests"] - w["non_2xx_3xx"]) / w["duration"] if w["duration"] else 0.0

    return {
        "signin_p50_ms": summary(s["wrk"]["latency_ms"].get("50") for s in signins),
        "signin_p99_ms": summary(s["wrk"]["latency_ms"].get("99") for s in signins),
        "signin_max_ms": summary(s["wrk"].get("max_ms") for s in signins),
        "signins": sum(s["wrk"]["requests"] for s in signins),
        "per_second": summary(per_second(s) for s in signins),
        "errors": _errors(signins),
        "pages_rps": summary(p["wrk"]["rps"] for p in pages),
        "pages_p99_ms": summary(p["wrk"]["latency_ms"].get("99") for p in pages),
        "pages_errors": _errors(pages),
    }


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    """Every scenario's figures and its verdict against the targets of SPEC §10."""
    s = run["settings"]
    samples = run["samples"]
    result = {
        "browsing": browsing(samples.get("protected", []), list(s["connections"])),
        "growth": growth(samples.get("protected", []), s["growth_connections"]),
        "signin": signin(samples),
        "signup": signup(samples.get("signup", [])),
        "loaded": loaded(samples),
        "peak_rss_mib": run["peak_rss_mib"],
    }
    result["targets"] = targets(result)
    return result


def _no_errors(totals: dict[str, int]) -> bool:
    return sum(totals.values()) == 0


def _at_least(stat: dict[str, Any], bound: float) -> bool:
    return stat["median"] is not None and stat["median"] >= bound


def _ran(stat: dict[str, Any]) -> bool:
    return stat["median"] is not None


def _x(stat: dict[str, Any], digits: int = 2) -> str:
    return fmt(stat, digits, " x")


def _target(what: str, target: str, result: str, met: bool | None) -> dict[str, Any]:
    """One row of the target table; `met` None when the scenario did not run."""
    return {"what": what, "target": target, "result": result, "met": met}


def _browsing_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    judged = [row for row in rows if row["connections"] <= RATIO_JUDGED_UP_TO]
    largest = [row for row in rows if row["connections"] > RATIO_JUDGED_UP_TO]
    found = []
    if judged:
        ratios = " / ".join(_x(row["ratio_to_quart"]) for row in judged)
        cpu = " / ".join(_x(row["cpu_ratio_to_quart"]) for row in judged)
        floor_rps = " / ".join(_x(row["floor_ratio_to_quart"]) for row in judged)
        floor_cpu = " / ".join(_x(row["floor_cpu_ratio_to_quart"]) for row in judged)
        conns = "/".join(str(row["connections"]) for row in judged)
        found.append(
            _target(
                f"1: GET /protected rps vs a bare Quart hello, same run ({conns} connections)",
                "≥ 0.80 x (in rps, and in CPU per request: Quart hello's / the app's)",
                f"rps {ratios}; CPU per request {cpu} (the floor, bench/floor.py: rps "
                f"{floor_rps}; CPU {floor_cpu})",
                all(
                    _at_least(r["ratio_to_quart"], 0.8) and _at_least(r["cpu_ratio_to_quart"], 0.8)
                    for r in judged
                ),
            )
        )
    for row in largest:
        errors, quart_errors = row["errors"], row["quart_errors"]
        found.append(
            _target(
                f"1: GET /protected at {row['connections']} connections",
                "zero errors; no request over 2 s",
                f"errors {_errors_text(errors)}, slowest {fmt(row['max_ms'])} ms "
                f"(Quart hello: errors {_errors_text(quart_errors)}, "
                f"slowest {fmt(row['quart_max_ms'])} ms)",
                _no_errors(errors) and _ran(row["max_ms"]) and row["max_ms"]["max"] <= 2000,
            )
        )
    if rows:
        found.append(
            _target(
                "1: zero errors at every connection count",
                "0",
                ", ".join(f"{r['connections']}: {_errors_text(r['errors'])}" for r in rows),
                all(_no_errors(r["errors"]) for r in rows),
            )
        )
    return found


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of SPEC §10 (issues 5 and 13), judged on medians over rounds."""
    signin, signup, growth, load = r["signin"], r["signup"], r["growth"], r["loaded"]
    ran_storm, ran_mixed = _ran(signin["ratio"]), _ran(signin["browse_p99_ratio"])
    ran_signup, ran_loaded = _ran(signup["per_second"]), _ran(load["signin_p99_ms"])
    found = _browsing_targets(r["browsing"])
    found += [
        _target(
            "2: sign-in storm vs the bcrypt limit (cores / one hash's time)",
            "≥ 0.9 x, zero errors",
            f"{_x(signin['ratio'])}, errors {_errors_text(signin['errors'])}",
            (_at_least(signin["ratio"], 0.9) and _no_errors(signin["errors"]))
            if ran_storm
            else None,
        ),
        _target(
            "7: sign-in latency while /protected saturates the cores",
            "p99 ≤ 3 s, zero errors",
            f"p99 {fmt(load['signin_p99_ms'])} ms, errors {_errors_text(load['errors'])}",
            (load["signin_p99_ms"]["median"] <= 3000 and _no_errors(load["errors"]))
            if ran_loaded
            else None,
        ),
        _target(
            "3: /protected p99 during a sign-in storm vs alone",
            "≤ 2 x",
            _x(signin["browse_p99_ratio"]),
            signin["browse_p99_ratio"]["median"] <= 2.0 if ran_mixed else None,
        ),
        _target(
            "4: sign-up storm",
            "zero errors, no lost or duplicate rows",
            f"errors {_errors_text(signup['errors'])}, lost {signup['lost']}, "
            f"duplicate {signup['duplicates']}",
            (_no_errors(signup["errors"]) and signup["lost"] == 0 and signup["duplicates"] == 0)
            if ran_signup
            else None,
        ),
        _target(
            "5: 1,000,000 stored sessions vs 1,000",
            "≥ 0.95 x",
            _x(growth["ratio"]),
            _at_least(growth["ratio"], 0.95) if _ran(growth["ratio"]) else None,
        ),
    ]
    return found


def targets_md(found: list[dict[str, Any]]) -> list[str]:
    """The target table: what, target, this run's result, met or not."""
    verdict = {True: "met", False: "**not met**", None: "not run"}
    return _table(
        ["what", "target (same run)", "result", "met"],
        [[t["what"], t["target"], t["result"], verdict[t["met"]]] for t in found],
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _header(run: dict[str, Any]) -> list[str]:
    s = run["settings"]
    return [
        f"# Bench {run['started']} ({run['mode']} mode, {s['rounds']} rounds; "
        f"{s.get('browsing_rounds', s['rounds'])} of GET /protected)",
        "",
        f"{run['cpus']} CPUs, {run['workers']} Hypercorn workers (hypercorn.toml as users run it;",
        "the access log is formatted but sent to /dev/null), bcrypt cost "
        f"{run['bcrypt_cost']}, wrk timeout {s['page_timeout']} s in scenario 1 (a slower "
        f"request counts as a timeout error), {s['wrk_timeout']} s for paced browsing, "
        f"{s['storm_timeout']} s for sign-ins.",
        "Figures are `median [min..max]` over rounds; ratios are paired per round (A B, then"
        " B A in scenario 1).",
        "Errors are `non-2xx/3xx / socket (connect+read+write+timeout)`, summed over rounds.",
        "The machine is shared and noisy: trust the ratios more than the absolute figures.",
    ]


def _browsing_md(run: dict[str, Any], result: dict[str, Any]) -> list[str]:
    s, g = run["settings"], result["growth"]
    rows = [
        [
            str(row["connections"]),
            fmt(row["hello_rps"]),
            fmt(row["rps"]),
            fmt(row["ratio"], 2),
            fmt(row["quart_rps"]),
            fmt(row["ratio_to_quart"], 2),
            fmt(row["cpu_us"]),
            fmt(row["quart_cpu_us"]),
            fmt(row["cpu_ratio_to_quart"], 2),
            fmt(row["floor_ratio_to_quart"], 2),
            fmt(row["floor_cpu_ratio_to_quart"], 2),
            fmt(row["p50_ms"], 1),
            fmt(row["p99_ms"], 1),
            fmt(row["hello_p99_ms"], 1),
            fmt(row["max_ms"]),
            _errors_text(row["errors"]),
            _errors_text(row["hello_errors"]),
            _errors_text(row["quart_errors"]),
            fmt(row["busiest_worker_share"], 2),
            fmt(row["wrk_cores"], 2),
            fmt(row["wrk_cpu_share"], 2),
        ]
        for row in result["browsing"]
    ]
    header = ["conns", "hello rps", "/protected rps", "ratio", "Quart hello rps"]
    header += ["ratio to Quart hello", "CPU us/request", "Quart hello CPU us/request"]
    header += ["CPU ratio (Quart hello / app)", "floor ratio", "floor CPU ratio"]
    header += ["p50 ms", "p99 ms"]
    header += ["hello p99 ms", "slowest ms", "errors", "hello errors", "Quart hello errors"]
    header += ["busiest worker CPU"]
    header += ["wrk cores", "wrk CPU share"]
    growth_rows = [
        [str(s["sessions"]), fmt(g["small_rps"]), "1", "-"],
        [
            str(s["large_sessions"]),
            fmt(g["large_rps"]),
            fmt(g["ratio"], 2),
            _errors_text(g["errors"]),
        ],
    ]
    return [
        "",
        "## 1. GET /protected with a valid session",
        "",
        *_table(header, rows),
        "",
        f"## 5. Growth: GET /protected at {g['connections']} connections",
        "",
        *_table(["sessions stored", "rps", "ratio", "errors"], growth_rows),
    ]


def _signin_md(run: dict[str, Any], si: dict[str, Any]) -> list[str]:
    s = run["settings"]
    storm = [
        fmt(si["bcrypt_ms"]),
        fmt(si["limit"], 2),
        fmt(si["per_second"], 2),
        fmt(si["ratio"], 2),
        fmt(si["available"], 2),
        fmt(si["ratio_available"], 2),
        fmt(si["p99_ms"]),
        _errors_text(si["errors"]),
        fmt(si["wrk_cores"], 3),
    ]
    mixed = [
        fmt(si["browse_alone_p99_ms"], 1),
        fmt(si["browse_during_p99_ms"], 1),
        fmt(si["browse_p99_ratio"], 2),
        fmt(si["browse_rps_alone"]),
        fmt(si["browse_rps_during"]),
        fmt(si["signins_during"], 2),
        _errors_text(si["browse_errors"]),
        _errors_text(si["storm_during_errors"]),
    ]
    return [
        "",
        f"## 2. Sign-in storm (POST /api/login, {s['storm_connections']} connections)",
        "",
        *_table(
            [
                "bcrypt ms/check (1 core)",
                "limit/s (cores / bcrypt)",
                "sign-ins/s",
                "ratio",
                "bcrypt/s measured (1 thread per core)",
                "ratio to measured",
                "p99 ms",
                "errors",
                "wrk cores",
            ],
            [storm],
        ),
        "",
        f"## 3. Browsing /protected ({s['browse_connections']} connections, "
        f"{s['browse_delay_ms']} ms pause each) alone and during a sign-in storm",
        "",
        *_table(
            [
                "p99 alone ms",
                "p99 during storm ms",
                "ratio",
                "rps alone",
                "rps during",
                "sign-ins/s during",
                "errors (browse)",
                "errors (storm)",
            ],
            [mixed],
        ),
    ]


def _signup_md(run: dict[str, Any], su: dict[str, Any]) -> list[str]:
    s = run["settings"]
    row = [fmt(su["per_second"], 2), fmt(su["p99_ms"]), _errors_text(su["errors"])]
    row += [str(su[k]) for k in ("successes", "rows", "lost", "duplicates", "abandoned")]
    return [
        "",
        f"## 4. Sign-up storm (POST /api/register, {s['signup_connections']} connections)",
        "",
        *_table(
            [
                "sign-ups/s",
                "p99 ms",
                "errors",
                "201s",
                "rows",
                "lost",
                "duplicate",
                "rows finished after wrk hung up",
            ],
            [row],
        ),
    ]


def _loaded_md(run: dict[str, Any], lo: dict[str, Any]) -> list[str]:
    s = run["settings"]
    row = [
        fmt(lo["signin_p50_ms"]),
        fmt(lo["signin_p99_ms"]),
        fmt(lo["signin_max_ms"]),
        str(lo["signins"]),
        fmt(lo["per_second"], 2),
        _errors_text(lo["errors"]),
        fmt(lo["pages_rps"]),
        fmt(lo["pages_p99_ms"], 1),
        _errors_text(lo["pages_errors"]),
    ]
    return [
        "",
        f"## 7. Sign-ins (POST /api/login, {s['loaded_signin_connections']} connections) while "
        f"GET /protected runs at {s['loaded_connections']} connections",
        "",
        *_table(
            [
                "sign-in p50 ms",
                "sign-in p99 ms",
                "slowest sign-in ms",
                "sign-ins",
                "sign-ins/s",
                "errors (sign-in)",
                "/protected rps",
                "/protected p99 ms",
                "errors (/protected)",
            ],
            [row],
        ),
    ]


def markdown(run: dict[str, Any], result: dict[str, Any]) -> str:
    """The bench table."""
    s = run["settings"]
    rss = [
        [name, ", ".join(f"{v:.0f}" for v in values)]
        for name, values in result["peak_rss_mib"].items()
    ]
    lines = [
        *_header(run),
        *_browsing_md(run, result),
        *_signin_md(run, result["signin"]),
        *_signup_md(run, result["signup"]),
        *_loaded_md(run, result["loaded"]),
        "",
        f"## 6. Peak RSS per worker (VmHWM after the runs at {max(s['connections'])} connections)",
        "",
        *_table(["server", "MiB per worker"], rss),
        "",
        "## Targets (SPEC §10)",
        "",
        *targets_md(result["targets"]),
    ]
    return "\n".join(lines) + "\n"
