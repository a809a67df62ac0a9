"""Server-side sessions (SPEC §5): one test per property."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import PASSWORD
from dbrows import rows, settle
from quart import Quart, session
from quart.testing import QuartClient

from quart_auth_app import create_app
from quart_auth_app.purge import purge_expired
from quart_auth_app.store import SessionRecord, User
from quart_auth_app.testing import authenticated_client, create_user, login_session


def session_headers(response: Any) -> list[str]:
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]


def token_of(response: Any) -> str:
    (header,) = session_headers(response)
    return str(header.split(";", 1)[0].split("=", 1)[1])


def with_cookie(app: Quart, token: str) -> QuartClient:
    client = app.test_client()
    client.set_cookie("localhost", "session", token)
    return client


def sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def sign_in(client: QuartClient, user: User, **extra: str) -> Any:
    response = await client.post(
        "/login", form={"email": user.email, "password": PASSWORD, **extra}
    )
    assert response.status_code == 303
    return response


async def signed_in(client: QuartClient) -> bool:
    status = (await client.get("/api/me")).status_code
    assert status in (200, 401)
    return status == 200


# the token and its hash


async def test_raw_token_is_nowhere_in_the_database(
    app: Quart, client: QuartClient, user: User
) -> None:
    token = token_of(await sign_in(client, user, remember="1"))
    await client.get("/protected")
    assert len(token) >= 22  # at least 128 bits, url-safe base64
    assert rows(app, "SELECT token_hash FROM sessions") == [(sha256(token),)]
    # Every column of every row, as text: neither the token nor a hex/base64 form of it.
    for (row,) in rows(app, "SELECT CAST(id AS TEXT) || ' ' || CAST(data AS TEXT) FROM sessions"):
        assert token not in row and token.encode().hex() not in row
    if not app.config.get("DATABASE_URL"):
        # The SQLite files themselves, write-ahead log included.
        files = [Path(app.config["DATABASE"] + suffix) for suffix in ("", "-wal", "-journal")]
        blob = b"".join(f.read_bytes() for f in files if f.exists())
        assert sha256(token) in blob  # the scan does reach the stored row...
        assert token.encode() not in blob  # ...and the token itself is not there


async def test_stored_hash_cannot_be_replayed_as_cookie(
    app: Quart, auth_client: QuartClient
) -> None:
    (stored,) = rows(app, "SELECT token_hash FROM sessions")[0]
    for forged in (stored.hex(), stored.decode("latin-1").encode().hex()[:64]):
        assert not await signed_in(with_cookie(app, forged))


# rotation and planted cookies


async def test_sign_in_rotates_an_anonymous_session(
    app: Quart, client: QuartClient, user: User
) -> None:
    # An anonymous visitor who stores something (the flash after signing out) has a row.
    await sign_in(client, user)
    response = await client.post("/logout")
    before = token_of(response)
    assert rows(app, "SELECT user_id FROM sessions") == [(None,)]
    after = token_of(await sign_in(client, user))
    assert after != before
    assert rows(app, "SELECT token_hash, user_id FROM sessions") == [(sha256(after), user.id)]
    assert not await signed_in(with_cookie(app, before))
    assert await signed_in(client)


async def test_each_sign_in_gets_a_new_token(app: Quart, client: QuartClient, user: User) -> None:
    first = token_of(await sign_in(client, user))
    second = token_of(await sign_in(client, user))
    assert first != second
    assert not await signed_in(with_cookie(app, first))
    assert rows(app, "SELECT token_hash FROM sessions") == [(sha256(second),)]


async def test_planted_attacker_token_is_not_adopted(app: Quart, user: User) -> None:
    planted = "attacker-chosen-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    victim = with_cookie(app, planted)
    issued = token_of(await sign_in(victim, user))
    assert issued != planted
    assert rows(app, "SELECT count(*) FROM sessions WHERE token_hash = ?", sha256(planted)) == [
        (0,)
    ]
    assert not await signed_in(with_cookie(app, planted))
    assert await signed_in(victim)


async def test_planted_anonymous_session_is_worthless_after_login(app: Quart, user: User) -> None:
    attacker = app.test_client()
    planted = token_of(await attacker.post("/logout"))  # a real, stored anonymous session
    victim = with_cookie(app, planted)
    await sign_in(victim, user)
    assert not await signed_in(with_cookie(app, planted))
    assert not await signed_in(attacker)
    assert await signed_in(victim)


async def test_password_change_rotates_and_revokes(
    app: Quart, client: QuartClient, user: User
) -> None:
    old = token_of(await sign_in(client, user))
    elsewhere = await login_session(app, user)
    response = await client.post(
        "/api/password",
        json={"current_password": PASSWORD, "new_password": "plum tractor velvet orbit"},
    )
    assert response.status_code == 204
    new = token_of(response)
    assert new != old
    assert not await signed_in(with_cookie(app, old))
    assert not await signed_in(with_cookie(app, elsewhere))
    assert await signed_in(with_cookie(app, new))
    assert rows(app, "SELECT token_hash FROM sessions") == [(sha256(new),)]


# logout


async def test_replay_after_logout_is_anonymous(
    app: Quart, client: QuartClient, user: User
) -> None:
    token = token_of(await sign_in(client, user))
    response = await client.post("/logout")
    assert response.status_code == 303
    assert rows(app, "SELECT count(*) FROM sessions WHERE token_hash = ?", sha256(token)) == [(0,)]
    replay = with_cookie(app, token)
    assert (await replay.get("/protected")).status_code == 302
    assert not await signed_in(replay)


async def test_api_logout_ends_the_cookie(app: Quart, auth_client: QuartClient) -> None:
    response = await auth_client.post("/api/logout", json={})
    assert response.status_code == 204
    (header,) = session_headers(response)
    assert "Max-Age=0" in header
    assert rows(app, "SELECT count(*) FROM sessions") == [(0,)]


async def test_logout_leaves_only_the_flash(app: Quart, client: QuartClient, user: User) -> None:
    old = token_of(await sign_in(client, user))
    await client.get("/")  # the welcome flash is shown and gone
    response = await client.post("/logout")
    new = token_of(response)
    assert new != old
    ((user_id, data),) = rows(app, "SELECT user_id, data FROM sessions")
    assert user_id is None
    assert set(json.loads(data) if isinstance(data, str) else data) == {"_flashes"}


async def test_signing_up_while_signed_in_ends_the_old_session(
    app: Quart, auth_client: QuartClient
) -> None:
    (old_hash,) = rows(app, "SELECT token_hash FROM sessions")[0]
    response = await auth_client.post(
        "/api/register", json={"email": "grace@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    ((token_hash, email),) = rows(
        app, "SELECT s.token_hash, u.email FROM sessions s JOIN users u ON u.id = s.user_id"
    )
    assert token_hash != old_hash and email == "grace@example.com"


async def test_unchanged_session_sets_no_cookie(auth_client: QuartClient) -> None:
    for path in ("/", "/protected", "/api/me"):
        response = await auth_client.get(path)
        assert response.status_code == 200
        assert not response.headers.getlist("Set-Cookie"), path


# expiry


async def test_idle_session_expires(app: Quart, auth_client: QuartClient) -> None:
    idle = app.config["SESSION_IDLE_TIMEOUT"]
    rows(app, "UPDATE sessions SET last_seen = ?", time.time() - idle + 30)
    assert await signed_in(auth_client)
    await settle(app)  # the touch that request queued
    rows(app, "UPDATE sessions SET last_seen = ?", time.time() - idle - 1)
    response = await auth_client.get("/protected")
    assert response.status_code == 302
    assert "Max-Age=0" in session_headers(response)[0]


async def test_session_past_absolute_lifetime_expires(app: Quart, auth_client: QuartClient) -> None:
    # In steady use (last_seen fresh), yet past its end.
    rows(app, "UPDATE sessions SET last_seen = ?, expires_at = ?", time.time(), time.time() - 1)
    assert not await signed_in(auth_client)


async def test_remembered_session_outlives_idle_but_not_its_end(app: Quart, user: User) -> None:
    client = await authenticated_client(app, user, remember=True)
    rows(
        app,
        "UPDATE sessions SET last_seen = ?",
        time.time() - 10 * app.config["SESSION_IDLE_TIMEOUT"],
    )
    assert await signed_in(client)
    rows(app, "UPDATE sessions SET expires_at = ?", time.time() - 1)
    assert not await signed_in(client)


@pytest.mark.parametrize(
    ("settings", "alive_after", "dead_after"),
    [
        ({"SESSION_IDLE_TIMEOUT": 2}, 0.0, 2.3),
        ({"SESSION_LIFETIME": 2}, 0.0, 2.3),
    ],
)
async def test_short_timeouts_from_config(
    config: dict[str, Any], settings: dict[str, int], alive_after: float, dead_after: float
) -> None:
    app = create_app({**config, **settings})
    async with app.test_app():
        user = await create_user(app, "ada@example.com")
        client = await authenticated_client(app, user)
        record = rows(app, "SELECT created_at, expires_at FROM sessions")[0]
        if "SESSION_LIFETIME" in settings:
            assert record[1] == pytest.approx(record[0] + 2)
        assert await signed_in(client)
        await settle(app)
        # Pretend time passed by ageing the row rather than sleeping.
        shift = dead_after
        rows(
            app,
            "UPDATE sessions SET created_at = created_at - ?, last_seen = last_seen - ?, expires_at = expires_at - ?",
            shift,
            shift,
            shift,
        )
        assert not await signed_in(client)


# bad cookies


async def _real_token(app: Quart, user: User) -> str:
    return await login_session(app, user)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: "garbage",
        lambda t: t[:-1],
        lambda t: t[:20],
        lambda t: t + "A",
        lambda t: t.upper(),
        lambda t: "A" * 129,
        lambda t: "A" * 4000,
        lambda t: t[:-1] + "é",
        lambda t: "€" * 10,
        lambda t: "\x00" * 8,
        lambda t: t + "\x00",
        lambda t: t.replace("-", "+").replace("_", "/") + "=" if "-" in t or "_" in t else t[1:],
        lambda t: "%00%ff",
        lambda t: "../../etc/passwd",
    ],
)
async def test_bad_cookies_are_anonymous(app: Quart, user: User, mangle: Any) -> None:
    token = await _real_token(app, user)
    cookie = mangle(token)
    client = app.test_client()
    headers = {"Cookie": f"session={cookie}"}
    for path, anonymous_status in (
        ("/", 200),
        ("/protected", 302),
        ("/api/me", 401),
        ("/login", 200),
    ):
        response = await client.get(path, headers=headers)
        assert response.status_code == anonymous_status, path
    body = (await (await client.get("/", headers=headers)).get_data()).decode()
    assert "Welcome, " not in body
    # The genuine session is untouched by the forgeries.
    assert await signed_in(with_cookie(app, token))


async def test_stale_cookie_is_cleared(app: Quart) -> None:
    response = await app.test_client().get("/", headers={"Cookie": "session=stale-token"})
    (header,) = session_headers(response)
    assert "Max-Age=0" in header


# cookie attributes


async def test_cookie_flags(app: Quart, client: QuartClient, user: User) -> None:
    (header,) = session_headers(await sign_in(client, user))
    parts = {p.strip().split("=")[0].lower(): p.strip() for p in header.split(";")}
    assert parts["samesite"] == "SameSite=Lax"
    assert parts["path"] == "Path=/"
    assert "httponly" in parts
    assert "secure" not in parts
    assert "max-age" not in parts and "expires" not in parts  # a browser-session cookie


async def test_remember_me_cookie_lifetime(app: Quart, client: QuartClient, user: User) -> None:
    before = time.time()
    (header,) = session_headers(await sign_in(client, user, remember="1"))
    lifetime = app.config["REMEMBER_LIFETIME"]
    assert f"Max-Age={lifetime}" in header
    assert "Expires=" in header
    ((expires_at, remember),) = rows(app, "SELECT expires_at, remember FROM sessions")
    assert remember == 1
    assert before + lifetime <= expires_at <= time.time() + lifetime


async def test_plain_session_server_lifetime(app: Quart, client: QuartClient, user: User) -> None:
    before = time.time()
    await sign_in(client, user)
    ((expires_at, remember),) = rows(app, "SELECT expires_at, remember FROM sessions")
    assert remember == 0
    assert (
        before + app.config["SESSION_LIFETIME"]
        <= expires_at
        <= time.time() + app.config["SESSION_LIFETIME"]
    )


async def test_secure_cookie_when_configured(config: dict[str, Any]) -> None:
    app = create_app({**config, "SESSION_COOKIE_SECURE": True})
    async with app.test_app():
        user = await create_user(app, "ada@example.com", "Ada", PASSWORD)
        response = await app.test_client().post(
            "/login", form={"email": user.email, "password": PASSWORD}
        )
        (header,) = session_headers(response)
        assert "; Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header


async def test_host_prefixed_cookie_name(config: dict[str, Any]) -> None:
    app = create_app(
        {**config, "SESSION_COOKIE_SECURE": True, "SESSION_COOKIE_NAME": "__Host-session"}
    )
    async with app.test_app():
        user = await create_user(app, "ada@example.com", "Ada", PASSWORD)
        client = app.test_client()
        response = await client.post(
            "/login", form={"email": user.email, "password": PASSWORD}, scheme="https"
        )
        cookies = response.headers.getlist("Set-Cookie")
        (header,) = [h for h in cookies if h.startswith("__Host-session=")]
        assert "; Secure" in header and "; Path=/" in header and "Domain" not in header
        (device,) = [h for h in cookies if h != header]
        assert device.startswith("device=") and "; Secure" in device and "; HttpOnly" in device
        me = await client.get("/api/me", scheme="https")
        assert me.status_code == 200


async def test_secure_cookie_over_https(app: Quart, client: QuartClient, user: User) -> None:
    response = await client.post(
        "/login", form={"email": user.email, "password": PASSWORD}, scheme="https"
    )
    (header,) = session_headers(response)
    assert "; Secure" in header


# anonymous visitors


async def test_anonymous_browsing_creates_no_row_and_no_cookie(
    app: Quart, client: QuartClient, user: User
) -> None:
    requests = [
        ("GET", "/"),
        ("GET", "/login"),
        ("GET", "/login?next=/protected"),
        ("GET", "/register"),
        ("GET", "/logout"),
        ("GET", "/protected"),
        ("GET", "/account"),
        ("GET", "/healthz"),
        ("GET", "/static/style.css"),
        ("GET", "/openapi.json"),
        ("GET", "/api/me"),
        ("GET", "/no-such-page"),
    ]
    for method, path in requests:
        response = await client.open(path, method=method)
        assert response.status_code < 500, path
        assert not response.headers.getlist("Set-Cookie"), path
    failed = await client.post("/login", form={"email": user.email, "password": "wrong password"})
    assert failed.status_code == 401 and not failed.headers.getlist("Set-Cookie")
    assert rows(app, "SELECT count(*) FROM sessions") == [(0,)]


# Quart's session and flash


async def test_flash_is_shown_once(app: Quart, client: QuartClient, user: User) -> None:
    await sign_in(client, user)
    assert "Welcome, Ada!" in (await (await client.get("/")).get_data()).decode()
    assert "Welcome, Ada!</p>" not in (await (await client.get("/protected")).get_data()).decode()
    ((data,),) = rows(app, "SELECT data FROM sessions")
    assert "_flashes" not in data


def add_test_routes(app: Quart) -> None:
    """Test-only routes that write to the session, slowly enough for requests to overlap."""

    @app.post("/_test/set/<key>/<value>")
    async def set_key(key: str, value: str) -> str:
        session[key] = value
        await asyncio.sleep(0.1)  # both requests hold the same snapshot while this one waits
        return "ok"

    @app.post("/_test/pop/<key>")
    async def pop_key(key: str) -> str:
        session.pop(key, None)
        await asyncio.sleep(0.1)
        return "ok"

    @app.get("/_test/get")
    async def get_all() -> dict[str, Any]:
        return dict(session)


async def test_concurrent_writes_to_one_session_both_survive(
    app: Quart, auth_client: QuartClient
) -> None:
    add_test_routes(app)
    responses = await asyncio.gather(
        auth_client.post("/_test/set/colour/blue"),
        auth_client.post("/_test/set/size/large"),
        auth_client.post("/_test/set/shape/round"),
    )
    assert [r.status_code for r in responses] == [200, 200, 200]
    data = await (await auth_client.get("/_test/get")).get_json()
    assert {k: data[k] for k in ("colour", "size", "shape")} == {
        "colour": "blue",
        "size": "large",
        "shape": "round",
    }
    assert await signed_in(auth_client)


async def test_concurrent_set_and_delete_both_apply(app: Quart, auth_client: QuartClient) -> None:
    add_test_routes(app)
    await auth_client.post("/_test/set/old/1")
    await asyncio.gather(auth_client.post("/_test/pop/old"), auth_client.post("/_test/set/new/2"))
    data = await (await auth_client.get("/_test/get")).get_json()
    assert "old" not in data and data["new"] == "2"


# last_seen


@pytest.mark.parametrize(
    ("idle", "fresh_age", "stale_age"),
    [(7200, 50.0, 61.0), (100, 8.0, 11.0), (20, 1.0, 2.5)],
)
async def test_last_seen_is_touched_at_most_every_min_60_and_tenth_of_idle(
    config: dict[str, Any], idle: int, fresh_age: float, stale_age: float
) -> None:
    app = create_app({**config, "SESSION_IDLE_TIMEOUT": idle})
    async with app.test_app():
        client = await authenticated_client(app, "ada@example.com")
        seen = time.time() - fresh_age
        rows(app, "UPDATE sessions SET last_seen = ?", seen)
        response = await client.get("/protected")
        assert response.status_code == 200
        assert rows(app, "SELECT last_seen FROM sessions") == [(seen,)]  # no write
        seen = time.time() - stale_age
        rows(app, "UPDATE sessions SET last_seen = ?", seen)
        before = time.time()
        assert (await client.get("/protected")).status_code == 200
        await settle(app)
        ((last_seen,),) = rows(app, "SELECT last_seen FROM sessions")
        assert before <= last_seen <= time.time()


@asynccontextmanager
async def sessions_locked(app: Quart) -> AsyncIterator[None]:
    """Another process holds the write lock on the sessions (SQLite: the database's)."""
    url = app.config.get("DATABASE_URL")
    if url:
        db = await asyncpg.connect(url, timeout=10)
        try:
            async with db.transaction():
                await db.execute("SELECT id FROM sessions FOR UPDATE")
                yield
        finally:
            await db.close()
        return
    holder = sqlite3.connect(app.config["DATABASE"], isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


async def test_a_due_last_seen_write_does_not_hold_up_the_page(
    app: Quart, auth_client: QuartClient
) -> None:
    """The touch is written behind the response: a busy database write lock delays no page."""
    stale = time.time() - 61
    rows(app, "UPDATE sessions SET last_seen = ?", stale)
    async with sessions_locked(app):
        # Written inline, the touch would wait for the lock (up to the 30 s busy timeout).
        response = await asyncio.wait_for(auth_client.get("/protected"), timeout=10)
        assert response.status_code == 200
        assert rows(app, "SELECT last_seen FROM sessions") == [(stale,)]
    await settle(app)
    ((last_seen,),) = rows(app, "SELECT last_seen FROM sessions")
    assert last_seen > stale + 50


async def test_queued_touches_of_many_sessions_all_land(app: Quart, user: User) -> None:
    clients = [await authenticated_client(app, user) for _ in range(12)]
    stale = time.time() - 61
    rows(app, "UPDATE sessions SET last_seen = ?", stale)
    before = time.time()
    responses = await asyncio.gather(*(client.get("/protected") for client in clients))
    assert [r.status_code for r in responses] == [200] * len(clients)
    await settle(app)
    seen = [value for (value,) in rows(app, "SELECT last_seen FROM sessions")]
    assert len(seen) == len(clients)
    assert all(before <= value <= time.time() for value in seen)


# purging


def _record(
    user_id: int | None, *, remember: bool, last_seen: float, expires_at: float, tag: str
) -> SessionRecord:
    return SessionRecord(
        id=tag,
        token_hash=sha256(tag),
        user_id=user_id,
        data={},
        remember=remember,
        created_at=last_seen,
        last_seen=last_seen,
        expires_at=expires_at,
        user_agent="",
        ip="",
    )


async def _plant_sessions(app: Quart) -> None:
    store = app.extensions["auth_store"]
    user = await create_user(app, "ada@example.com")
    now, idle = time.time(), app.config["SESSION_IDLE_TIMEOUT"]
    for record in (
        _record(user.id, remember=False, last_seen=now, expires_at=now + 100, tag="live"),
        _record(None, remember=False, last_seen=now, expires_at=now + 100, tag="live-anon"),
        _record(
            user.id, remember=True, last_seen=now - 2 * idle, expires_at=now + 100, tag="remembered"
        ),
        _record(
            user.id, remember=False, last_seen=now - idle - 1, expires_at=now + 100, tag="idle"
        ),
        _record(
            None, remember=False, last_seen=now - idle - 1, expires_at=now + 100, tag="idle-anon"
        ),
        _record(user.id, remember=True, last_seen=now, expires_at=now - 1, tag="ended"),
    ):
        await store.insert_session(record)


async def test_purge_expired_deletes_only_dead_sessions(app: Quart) -> None:
    await _plant_sessions(app)
    deleted = await purge_expired(app.config, app.extensions["auth_store"])
    assert deleted == 3
    assert sorted(r[0] for r in rows(app, "SELECT id FROM sessions")) == [
        "live",
        "live-anon",
        "remembered",
    ]


async def test_app_purges_expired_sessions_by_itself(config: dict[str, Any]) -> None:
    app = create_app({**config, "SESSION_PURGE_INTERVAL": 0.1})
    async with app.test_app():
        await _plant_sessions(app)
        deadline = time.monotonic() + 5
        while rows(app, "SELECT count(*) FROM sessions") != [(3,)] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sorted(r[0] for r in rows(app, "SELECT id FROM sessions")) == [
            "live",
            "live-anon",
            "remembered",
        ]


# the test helper


async def test_authenticated_client_helper(app: Quart, user: User) -> None:
    client = await authenticated_client(app, user)
    response = await client.get("/protected")
    assert response.status_code == 200
    assert "Welcome to the protected area, Ada" in (await response.get_data()).decode()
    assert rows(app, "SELECT user_id, remember FROM sessions") == [(user.id, 0)]


async def test_authenticated_client_helper_creates_user_by_email(app: Quart) -> None:
    client = await authenticated_client(app, "Grace@Example.com", remember=True)
    me = await (await client.get("/api/me")).get_json()
    assert me["email"] == "grace@example.com"
    assert rows(app, "SELECT remember FROM sessions") == [(1,)]
    # Users made by the helper without a password cannot sign in with any password.
    response = await app.test_client().post(
        "/api/login", json={"email": "grace@example.com", "password": ""}
    )
    assert response.status_code == 400
