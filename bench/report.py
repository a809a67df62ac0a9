"""Turn the samples into medians, ratios to the ceilings, target verdicts, Markdown and JSON."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

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


def browsing(samples: list[dict[str, Any]], connections: list[int]) -> list[dict[str, Any]]:
    """Scenario 1 rows: per connection count, the app against hello, paired by round."""
    rows = []
    for c in connections:
        hello = _by_round(samples, server="hello", connections=c)
        quart = _by_round(samples, server="quart", connections=c)
        app = _by_round(samples, server="app", connections=c)
        ratios = [ratio(app[r]["wrk"]["rps"], hello[r]["wrk"]["rps"]) for r in app if r in hello]
        quart_ratios = [
            ratio(app[r]["wrk"]["rps"], quart[r]["wrk"]["rps"]) for r in app if r in quart
        ]
        app_samples = list(app.values())
        rows.append(
            {
                "connections": c,
                "hello_rps": summary(h["wrk"]["rps"] for h in hello.values()),
                "quart_rps": summary(q["wrk"]["rps"] for q in quart.values()),
                "ratio_to_quart": summary(quart_ratios),
                "rps": summary(a["wrk"]["rps"] for a in app_samples),
                "ratio": summary(ratios),
                "p50_ms": summary(a["wrk"]["latency_ms"].get("50") for a in app_samples),
                "p99_ms": summary(a["wrk"]["latency_ms"].get("99") for a in app_samples),
                "hello_p99_ms": summary(h["wrk"]["latency_ms"].get("99") for h in hello.values()),
                "errors": _errors(app_samples),
                "hello_errors": _errors(list(hello.values())),
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


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    """Every scenario's figures and its verdict against issue 5's targets."""
    s = run["settings"]
    samples = run["samples"]
    result = {
        "browsing": browsing(samples.get("protected", []), list(s["connections"])),
        "growth": growth(samples.get("protected", []), s["growth_connections"]),
        "signin": signin(samples),
        "signup": signup(samples.get("signup", [])),
        "peak_rss_mib": run["peak_rss_mib"],
    }
    result["targets"] = targets(result)
    return result


def _no_errors(totals: dict[str, int]) -> bool:
    return sum(totals.values()) == 0


def _at_least(stat: dict[str, Any], bound: float) -> bool:
    return stat["median"] is not None and stat["median"] >= bound


def targets(r: dict[str, Any]) -> dict[str, bool]:
    """Issue 5's targets, judged on medians."""
    signin, signup = r["signin"], r["signup"]
    return {
        "1: >= 0.85x hello rps at every connection count": all(
            _at_least(row["ratio"], 0.85) for row in r["browsing"]
        ),
        "1: zero errors at every connection count": all(
            _no_errors(row["errors"]) for row in r["browsing"]
        ),
        "2: >= 0.9x the bcrypt limit": _at_least(signin["ratio"], 0.9),
        "2: zero errors": _no_errors(signin["errors"]),
        "3: /protected p99 during storm <= 2x unloaded": signin["browse_p99_ratio"]["median"]
        is not None
        and signin["browse_p99_ratio"]["median"] <= 2.0,
        "4: zero errors, no lost or duplicate rows": _no_errors(signup["errors"])
        and signup["lost"] == 0
        and signup["duplicates"] == 0,
        "5: >= 0.95x rps with 1,000,000 vs 1,000 sessions": _at_least(r["growth"]["ratio"], 0.95),
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _header(run: dict[str, Any]) -> list[str]:
    s = run["settings"]
    return [
        f"# Bench {run['started']} ({run['mode']} mode, {s['rounds']} rounds)",
        "",
        f"{run['cpus']} CPUs, {run['workers']} Hypercorn workers (hypercorn.toml as users run it;",
        "the access log is formatted but sent to /dev/null), bcrypt cost "
        f"{run['bcrypt_cost']}, wrk timeout {s['wrk_timeout']} s "
        f"({s['storm_timeout']} s in storms).",
        "Figures are `median [min..max]` over rounds; ratios are paired per round (A B A B).",
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
            fmt(row["p50_ms"], 1),
            fmt(row["p99_ms"], 1),
            fmt(row["hello_p99_ms"], 1),
            _errors_text(row["errors"]),
            _errors_text(row["hello_errors"]),
            fmt(row["busiest_worker_share"], 2),
            fmt(row["wrk_cores"], 2),
            fmt(row["wrk_cpu_share"], 2),
        ]
        for row in result["browsing"]
    ]
    header = ["conns", "hello rps", "/protected rps", "ratio", "Quart hello rps"]
    header += ["ratio to Quart hello", "p50 ms", "p99 ms"]
    header += ["hello p99 ms", "errors", "hello errors", "busiest worker CPU"]
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
        "",
        f"## 6. Peak RSS per worker (VmHWM after the runs at {max(s['connections'])} connections)",
        "",
        *_table(["server", "MiB per worker"], rss),
        "",
        "## Targets (issue 5)",
        "",
    ]
    for target, met in result["targets"].items():
        lines.append(f"- [{'x' if met else ' '}] {target}")
    return "\n".join(lines) + "\n"
