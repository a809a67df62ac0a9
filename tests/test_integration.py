"""The real Hypercorn, started as users start it (hypercorn.toml, 2 workers), under concurrent load.

SPEC §2 (hypercorn.toml), §3/§4 (the example's curl sign-in), §5 (sessions shared by
workers), §7 (headers), §8 (several workers on one SQLite file, no "database is locked").
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import subprocess
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from functools import partial
from pathlib import Path

import httpx
import pytest
from servers import ROOT, Access, Server, bounded, client, running

pytestmark = pytest.mark.integration

PASSWORD = "plum-orbit-canyon-42"  # no "&" or "%": it goes into curl's -d as the example does
SIGNUPS = 300
CONCURRENCY = 32
PROBES = 120


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integration") / "app.sqlite3"


@pytest.fixture(scope="module")
def server(database: Path) -> Iterator[Server]:
    """One server for the module, throttling off: the storms come from one address."""
    env = {"QUART_DATABASE": str(database), "QUART_THROTTLE_ENABLED": "false"}
    with running(database.parent, env) as started:
        yield started


def read_only(database: Path) -> sqlite3.Connection:
    """A read-only look at the live database (WAL lets it read beside the writers)."""
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True)


def session_cookie(response: httpx.Response) -> str:
    """The session token the response sets, from its Set-Cookie header."""
    [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith("session=")]
    assert "HttpOnly" in cookie, cookie
    return cookie.split(";")[0].removeprefix("session=")


def assert_log_clean(server: Server) -> None:
    """No traceback, no locked database, no 5xx anywhere in the server's log."""
    log = server.log_text()
    assert "database is locked" not in log
    assert "Traceback" not in log
    assert "[ERROR]" not in log
    assert [a for a in server.accesses() if a.status >= 500] == []


def responses(results: list[httpx.Response | BaseException]) -> list[httpx.Response]:
    """The responses, after checking that no request raised (timeout, reset, refused)."""
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [], errors[:3]
    return [r for r in results if isinstance(r, httpx.Response)]


async def register(http: httpx.AsyncClient, email: str) -> httpx.Response:
    return await http.post("/api/register", json={"email": email, "password": PASSWORD})


async def signed_in(server: Server, email: str) -> str:
    """Register `email` and sign it in through the API; the session token."""
    async with client(server) as http:
        assert (await register(http, email)).status_code == 201
        response = await http.post("/api/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200
    return session_cookie(response)


async def logged_since(server: Server, seen: int, count: int) -> list[Access]:
    """The access-log lines after the first `seen`, once `count` of them are written.

    A worker writes the line just after sending the response, so the last ones may lag.
    """
    for _ in range(50):
        lines = server.accesses()[seen:]
        if len(lines) >= count:
            break
        await asyncio.sleep(0.1)
    return lines


async def probe_me(server: Server, token: str, count: int) -> list[tuple[int, int]]:
    """GET /api/me `count` times on fresh connections: (status, pid of the worker that answered)."""
    seen = len(server.accesses())
    async with client(server, fresh_connections=True) as http:

        async def one() -> tuple[int, str]:
            headers = {"Cookie": f"session={token}"}
            async with http.stream("GET", "/api/me", headers=headers) as response:
                host, port = response.extensions["network_stream"].get_extra_info("client_addr")
                await response.aread()
                return response.status_code, f"{host}:{port}"

        results = await bounded([one] * count, concurrency=8)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [], errors[:3]
    answered = [r for r in results if not isinstance(r, BaseException)]
    # each probe's client address names its access-log line, and so its worker
    worker_of = {a.client: a.pid for a in await logged_since(server, seen, count)}
    return [(status, worker_of[client_addr]) for status, client_addr in answered]


async def test_signup_and_signin_storm(server: Server, database: Path) -> None:
    emails = [f"storm{i}@example.com" for i in range(SIGNUPS)]
    seen = len(server.accesses())
    # Fresh connections: a kept-alive pool opened at once can land on a single worker
    # (SPEC §10), and the point here is two processes writing one SQLite file.
    async with client(server, fresh_connections=True) as http:
        signups = responses(
            await bounded([partial(register, http, e) for e in emails], CONCURRENCY)
        )
        api_logins = responses(
            await bounded(
                [
                    partial(http.post, "/api/login", json={"email": e, "password": PASSWORD})
                    for e in emails[::2]
                ],
                CONCURRENCY,
            )
        )
        # the HTML form, with the original example's field name
        form_logins = responses(
            await bounded(
                [
                    partial(http.post, "/login", data={"username": e, "password": PASSWORD})
                    for e in emails[1::2]
                ],
                CONCURRENCY,
            )
        )

    assert Counter(r.status_code for r in signups) == {201: SIGNUPS}
    assert [r.json()["email"] for r in api_logins] == emails[::2]
    assert {(r.status_code, r.headers["location"]) for r in form_logins} == {(303, "/")}
    cookies = {session_cookie(r) for r in [*signups, *api_logins, *form_logins]}
    assert len(cookies) == 2 * SIGNUPS  # every sign-up and every sign-in got its own token

    with closing(read_only(database)) as db:
        stored = {row[0] for row in db.execute("SELECT email FROM users WHERE email LIKE 'storm%'")}
        hashes = {
            bytes(row[0])
            for row in db.execute(
                """SELECT token_hash FROM sessions JOIN users ON users.id = sessions.user_id
                   WHERE users.email LIKE 'storm%'"""
            )
        }
    assert stored == set(emails)
    assert hashes == {hashlib.sha256(c.encode()).digest() for c in cookies}

    assert_log_clean(server)
    storm = await logged_since(server, seen, 2 * SIGNUPS)
    assert Counter(a.path for a in storm) == {
        "/api/register": SIGNUPS,
        "/api/login": SIGNUPS // 2,
        "/login": SIGNUPS // 2,
    }
    per_worker = Counter(a.pid for a in storm)
    print("storm requests per worker:", dict(per_worker))
    assert set(per_worker) == server.worker_pids()
    assert min(per_worker.values()) >= SIGNUPS // 10  # both really wrote, not a token few


async def test_racing_duplicate_signups_across_workers_make_one_account(
    server: Server, database: Path
) -> None:
    emails = [f"twin{i}@example.com" for i in range(40)]
    async with client(server, fresh_connections=True) as http:
        results = responses(
            await bounded([partial(register, http, e) for e in emails for _ in "ab"], CONCURRENCY)
        )
    statuses = [sorted(r.status_code for r in results[i : i + 2]) for i in range(0, 80, 2)]
    assert statuses == [[200, 201]] * len(emails)  # the twin signs in (retry-safe, issue #16)
    with closing(read_only(database)) as db:
        rows = db.execute(
            "SELECT email, count(*) FROM users WHERE email LIKE 'twin%' GROUP BY email"
        )
        assert dict(rows.fetchall()) == dict.fromkeys(emails, 1)
    assert_log_clean(server)


async def test_session_is_shared_across_workers(server: Server, database: Path) -> None:
    token = await signed_in(server, "shared@example.com")

    before = await probe_me(server, token, PROBES)
    assert {status for status, _ in before} == {200}
    assert {pid for _, pid in before} == server.worker_pids()  # both workers answered

    async with client(server) as http:
        logout = await http.post("/api/logout", json={}, headers={"Cookie": f"session={token}"})
    assert logout.status_code == 204
    with closing(read_only(database)) as db:
        rows = db.execute(
            "SELECT count(*) FROM sessions WHERE token_hash = ?",
            (hashlib.sha256(token.encode()).digest(),),
        ).fetchone()
    assert rows == (0,)

    after = await probe_me(server, token, PROBES)
    assert {status for status, _ in after} == {401}
    assert {pid for _, pid in after} == server.worker_pids()
    print("probes per worker:", dict(Counter(pid for _, pid in before + after)))
    assert_log_clean(server)


async def test_curl_form_login_of_the_original_example(server: Server) -> None:
    email = "curl@example.com"
    async with client(server) as http:
        assert (await register(http, email)).status_code == 201
    curl = shutil.which("curl")
    if curl:  # the example's command; -s -D - -o /dev/null only print the response head
        head = subprocess.run(
            [curl, "-X", "POST", f"{server.url}/login", "-d",
             f"username={email}&password={PASSWORD}", "-s", "-D", "-", "-o", "/dev/null"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip().splitlines()  # fmt: skip
        status = int(head[0].split()[1])
        fields = [line.split(": ", 1) for line in head[1:]]
        headers = {k.lower(): v for k, v in fields}
        cookies = [v for k, v in fields if k.lower() == "set-cookie"]
    else:  # the same form post without curl
        async with client(server) as http:
            response = await http.post(
                "/login", content=f"username={email}&password={PASSWORD}",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
        status, headers = response.status_code, dict(response.headers)
        cookies = response.headers.get_list("set-cookie")
    assert status == 303, headers
    assert headers["location"] == "/"
    [token] = [
        c.split(";")[0].removeprefix("session=") for c in cookies if c.startswith("session=")
    ]

    async with client(server) as http:
        me = await http.get("/api/me", headers={"Cookie": f"session={token}"})
        page = await http.get("/protected", headers={"Cookie": f"session={token}"})
    assert me.status_code == 200
    assert me.json()["email"] == email
    assert page.status_code == 200
    assert "Welcome to the protected area, curl" in page.text


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/login", 200),
        ("/register", 200),
        ("/protected", 302),
        ("/healthz", 200),
        ("/api/me", 401),
        ("/openapi.json", 200),
        ("/static/style.css", 200),
        ("/no-such-page", 404),
    ],
)
async def test_real_server_headers(server: Server, path: str, status: int) -> None:
    async with client(server) as http:
        response = await http.get(path)
    assert response.status_code == status
    assert "server" not in response.headers
    assert "access-control-allow-origin" not in response.headers
    revealing = [v for v in response.headers.values() if "hypercorn" in v.lower()]
    assert revealing == []
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"]
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    if path != "/static/style.css":
        assert response.headers["cache-control"] == "no-store"
        assert "Cookie" in response.headers["vary"]


def test_hypercorn_toml_alone_starts_two_workers(tmp_path: Path) -> None:
    config = tomllib.loads((ROOT / "hypercorn.toml").read_text())
    assert config["workers"] == 2
    assert config["backlog"] >= 1024
    assert config["include_server_header"] is False

    env = {"QUART_DATABASE": str(tmp_path / "app.sqlite3")}
    with running(tmp_path, env, workers=None) as server:
        deadline = time.monotonic() + 20
        while len(server.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = server.worker_pids()
        assert len(pids) == 2, server.log_text()
        assert server.process.pid not in pids  # workers are children, not the parent
        assert "--workers" not in server.process.args  # type: ignore[operator]
        assert httpx.get(f"{server.url}/healthz", timeout=5).json()["status"] == "ok"
