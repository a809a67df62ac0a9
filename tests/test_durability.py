"""SIGKILL the real Hypercorn and restart it on the same file: nothing acknowledged is lost (SPEC §8)."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from functools import partial
from pathlib import Path

import httpx
import pytest
from servers import Server, bounded, client, running, start

pytestmark = pytest.mark.integration

PASSWORD = "plum-orbit-canyon-42"
STORM = 400
CONCURRENCY = 32
KILL_AFTER = 60  # acknowledged sign-ups before the kill


def environment(database: Path) -> dict[str, str]:
    return {"QUART_DATABASE": str(database), "QUART_THROTTLE_ENABLED": "false"}


def check_database(database: Path) -> set[str]:
    """Assert the file is sound (integrity, foreign keys); the emails it holds."""
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        return {row[0] for row in db.execute("SELECT email FROM users")}


def assert_log_clean(server: Server) -> None:
    log = server.log_text()
    assert "database is locked" not in log
    assert "Traceback" not in log
    assert [a for a in server.accesses() if a.status >= 500] == []


async def test_sigkill_mid_signup_storm_loses_no_acknowledged_signup(tmp_path: Path) -> None:
    database = tmp_path / "app.sqlite3"
    server = start(tmp_path, environment(database))
    acknowledged: list[str] = []
    killed = asyncio.Event()

    async def sign_up(http: httpx.AsyncClient, email: str) -> int:
        if killed.is_set():
            raise ConnectionAbortedError("not sent: the server is dead")
        try:
            response = await http.post("/api/register", json={"email": email, "password": PASSWORD})
        except httpx.TransportError:
            assert killed.is_set(), "a request failed before the kill"
            raise
        if response.status_code == 201:
            acknowledged.append(email)
            if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                killed.set()
                server.kill()  # SIGKILL to the parent and both workers, mid-storm
        return response.status_code

    try:
        async with client(server, fresh_connections=True) as http:
            emails = [f"storm{i}@example.com" for i in range(STORM)]
            results = await bounded([partial(sign_up, http, e) for e in emails], CONCURRENCY)
    finally:
        server.kill()
    assert killed.is_set()
    assert_log_clean(server)
    statuses = [r for r in results if isinstance(r, int)]
    assert set(statuses) == {201}  # until the kill, every sign-up succeeded
    assert len(statuses) < STORM  # the kill did cut the storm short
    failures = {type(r) for r in results if isinstance(r, BaseException)}
    assert failures <= {ConnectionAbortedError, httpx.ConnectError, httpx.ReadError,
                        httpx.RemoteProtocolError, httpx.WriteError}  # fmt: skip

    on_disk = check_database(database)  # before any restart
    assert on_disk >= set(acknowledged)
    print(
        f"acknowledged {len(acknowledged)}, unanswered {STORM - len(statuses)}, stored {len(on_disk)}"
    )

    with running(tmp_path, environment(database)) as restarted:
        async with client(restarted, fresh_connections=True) as http:
            logins = await bounded(
                [
                    partial(http.post, "/api/login", json={"email": e, "password": PASSWORD})
                    for e in acknowledged
                ],
                CONCURRENCY,
            )
            after = await http.post(
                "/api/register", json={"email": "after@example.com", "password": PASSWORD}
            )
        assert [r.status_code for r in logins if isinstance(r, httpx.Response)] == [200] * len(
            acknowledged
        )
        assert after.status_code == 201
        assert_log_clean(restarted)
    stored = check_database(database)
    assert stored >= {*acknowledged, "after@example.com"}


async def test_session_survives_sigkill_right_after_sign_in(tmp_path: Path) -> None:
    database = tmp_path / "app.sqlite3"
    email = "ada@example.com"
    server = start(tmp_path, environment(database))
    try:
        async with client(server) as http:
            signup = await http.post("/api/register", json={"email": email, "password": PASSWORD})
            api = await http.post("/api/login", json={"email": email, "password": PASSWORD})
            form = await http.post("/login", data={"username": email, "password": PASSWORD})
    finally:
        server.kill()  # the instant the last sign-in was answered
    assert (signup.status_code, api.status_code, form.status_code) == (201, 200, 303)
    tokens = [r.cookies["session"] for r in (signup, api, form)]
    assert len(set(tokens)) == 3

    with running(tmp_path, environment(database)) as restarted:
        async with client(restarted, fresh_connections=True) as http:
            for token in tokens:
                me = await http.get("/api/me", headers={"Cookie": f"session={token}"})
                assert me.status_code == 200
                assert me.json()["email"] == email
            page = await http.get("/protected", headers={"Cookie": f"session={tokens[2]}"})
            assert page.status_code == 200
            assert "Welcome to the protected area, ada" in page.text

            logout = await http.post(
                "/api/logout", json={}, headers={"Cookie": f"session={tokens[1]}"}
            )
            assert logout.status_code == 204
            gone = await http.get("/api/me", headers={"Cookie": f"session={tokens[1]}"})
            assert gone.status_code == 401
        assert_log_clean(restarted)
    assert check_database(database) == {email}
