"""Passwords and sign-in (SPEC §6): long and odd passwords, timing, rehash, strength, emails."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from typing import Any

import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app import create_app, passwords
from quart_auth_app.passwords import Hasher
from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client, create_user

# 100 characters, strong enough for zxcvbn; its first 72 are a different password to bcrypt.
LONG_PASSWORD = ("velvet tractor orbit plum " * 4)[:72] + "and then 28 more characters!"
EMOJI_PASSWORD = "🔐🦄 ride the 🐎 home"


async def register(client: QuartClient, email: str, password: str) -> int:
    response = await client.post("/api/register", json={"email": email, "password": password})
    return int(response.status_code)


async def login(app: Quart, email: str, password: str) -> int:
    response = await app.test_client().post(
        "/api/login", json={"email": email, "password": password}
    )
    return int(response.status_code)


# length and characters


async def test_password_longer_than_72_bytes_is_not_truncated(
    app: Quart, client: QuartClient
) -> None:
    assert len(LONG_PASSWORD) == 100
    assert await register(client, "long@example.com", LONG_PASSWORD) == 201
    assert await login(app, "long@example.com", LONG_PASSWORD) == 200
    assert await login(app, "long@example.com", LONG_PASSWORD[:72]) == 401
    assert await login(app, "long@example.com", LONG_PASSWORD[:72] + "x" * 28) == 401
    assert await login(app, "long@example.com", LONG_PASSWORD[:-1]) == 401


async def test_emoji_password(app: Quart, client: QuartClient) -> None:
    assert len(EMOJI_PASSWORD.encode()) > len(EMOJI_PASSWORD)  # multi-byte characters
    assert await register(client, "emoji@example.com", EMOJI_PASSWORD) == 201
    assert await login(app, "emoji@example.com", EMOJI_PASSWORD) == 200
    assert await login(app, "emoji@example.com", EMOJI_PASSWORD.replace("🐎", "🐴")) == 401


async def test_max_length_password_works(app: Quart, client: QuartClient) -> None:
    password = ("quartz " * 200)[:1023] + "!"
    assert await register(client, "max@example.com", password) == 201
    assert await login(app, "max@example.com", password) == 200


@pytest.mark.parametrize(
    ("path", "as_json"),
    [("/api/login", True), ("/api/register", True), ("/login", False), ("/register", False)],
)
async def test_huge_password_is_refused_without_bcrypt(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, path: str, as_json: bool
) -> None:
    runs: list[str] = []
    for name in ("hash_password", "check_password"):  # what the bcrypt pool runs
        real = getattr(passwords, name)
        monkeypatch.setattr(
            passwords, name, lambda *a, _real=real, _n=name: runs.append(_n) or _real(*a)
        )
    app = create_app({**config, "MAX_CONTENT_LENGTH": 1_000_000})
    async with app.test_app():
        fields = {"email": "huge@example.com", "password": "x" * 100_000}
        client = app.test_client()
        if as_json:
            response = await client.post(path, json=fields)
        else:
            response = await client.post(path, form=fields)
        assert response.status_code == 400
        assert "at most 1024" in (await response.get_data()).decode()
        assert runs == []  # counted, not timed: bcrypt never ran
        assert rows(app, "SELECT count(*) FROM users") == [(0,)]
        fine = {**fields, "password": "a long enough passphrase 42"}
        await (client.post(path, json=fine) if as_json else client.post(path, form=fine))
        assert runs  # and the count sees bcrypt when it does run


async def test_huge_password_over_body_limit_is_413(app: Quart, client: QuartClient) -> None:
    response = await client.post(
        "/api/login", json={"email": "huge@example.com", "password": "x" * 100_000}
    )
    assert response.status_code == 413


# timing


async def test_unknown_email_costs_the_same_as_a_wrong_password(config: dict[str, Any]) -> None:
    app = create_app({**config, "BCRYPT_ROUNDS": 10, "THROTTLE_ENABLED": False})
    async with app.test_app():
        await create_user(app, "ada@example.com", "Ada", PASSWORD)
        client = app.test_client()

        async def timed(email: str) -> float:
            start = time.perf_counter()
            response = await client.post(
                "/api/login", json={"email": email, "password": "wrong pass!"}
            )
            assert response.status_code == 401
            return time.perf_counter() - start

        await timed("ada@example.com")  # warm up the pool's threads
        known, unknown = [], []
        for _ in range(7):
            known.append(await timed("ada@example.com"))
            unknown.append(await timed("nobody@example.com"))
        ratio = statistics.median(unknown) / statistics.median(known)
        assert 0.5 < ratio < 2.0, (known, unknown)
        # And both really ran bcrypt at cost 10 (well above a plain database lookup).
        assert min(known + unknown) > 0.01


async def test_bcrypt_storm_does_not_block_other_requests(config: dict[str, Any]) -> None:
    app = create_app({**config, "BCRYPT_ROUNDS": 12, "THROTTLE_ENABLED": False})
    async with app.test_app():
        client = app.test_client()
        storm_start = time.perf_counter()
        storm = [
            asyncio.ensure_future(
                client.post(
                    "/api/login",
                    json={"email": f"nobody{i}@example.com", "password": "wrong pass!"},
                )
            )
            for i in range(4)
        ]
        await asyncio.sleep(0.02)
        start = time.perf_counter()
        health = await client.get("/healthz")
        health_time = time.perf_counter() - start
        statuses = [r.status_code for r in await asyncio.gather(*storm)]
        storm_time = time.perf_counter() - storm_start
        assert health.status_code == 200
        assert statuses == [401] * 4
        assert storm_time > 0.3  # bcrypt at cost 12 really ran, on a pool of about 2 threads
        assert health_time < storm_time / 4, (health_time, storm_time)


# rehash


async def test_hash_is_upgraded_when_cost_changes(
    app: Quart, config: dict[str, Any], user: User
) -> None:
    ((old_hash,),) = rows(app, "SELECT password_hash FROM users")
    assert old_hash.startswith("$2b$04$")
    upgraded = create_app({**config, "BCRYPT_ROUNDS": 5})
    async with upgraded.test_app():
        assert await login(upgraded, user.email, "not the password") == 401
        assert rows(upgraded, "SELECT password_hash FROM users") == [(old_hash,)]
        assert await login(upgraded, user.email, PASSWORD) == 200
        ((new_hash,),) = rows(upgraded, "SELECT password_hash FROM users")
        assert new_hash.startswith("$2b$05$")
        assert await login(upgraded, user.email, PASSWORD) == 200
        assert rows(upgraded, "SELECT password_hash FROM users") == [(new_hash,)]  # once only
    assert await login(app, user.email, PASSWORD) == 200  # the old cost still verifies


@pytest.mark.parametrize(
    ("stored", "rounds", "needs"),
    [
        ("$2b$04$" + "a" * 53, 4, False),
        ("$2b$04$" + "a" * 53, 12, True),
        ("$2b$12$" + "a" * 53, 12, False),
        ("garbage", 12, True),
    ],
)
def test_needs_rehash(stored: str, rounds: int, needs: bool) -> None:
    hasher = Hasher(rounds, 1)
    try:
        assert hasher.needs_rehash(stored) is needs
    finally:
        hasher.close()


async def test_malformed_stored_hash_never_matches(app: Quart, client: QuartClient) -> None:
    await create_user(app, "broken@example.com")  # the helper's unusable hash
    rows(
        app,
        "UPDATE users SET password_hash = 'not a bcrypt hash' WHERE email = ?",
        "broken@example.com",
    )
    assert await login(app, "broken@example.com", "anything at all") == 401


# strength


@pytest.mark.parametrize(
    "password",
    ["password123", "qwertyuiop", "123456789", "iloveyou1", "Password1!", "grace@example.com"],
)
async def test_common_passwords_refused_at_sign_up(
    app: Quart, client: QuartClient, password: str
) -> None:
    response = await client.post(
        "/api/register", json={"email": "grace@example.com", "password": password}
    )
    assert response.status_code == 400
    message = (await response.get_json())["fields"]["password"]
    assert message.startswith("This password is too easy to guess.")
    assert len(message) > len("This password is too easy to guess.")  # says why or what to do
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


async def test_common_password_refused_on_the_html_form(app: Quart, client: QuartClient) -> None:
    response = await client.post(
        "/register", form={"email": "grace@example.com", "password": "qwertyuiop"}
    )
    assert response.status_code == 400
    assert "This password is too easy to guess." in (await response.get_data()).decode()


# emails


@pytest.mark.parametrize(
    ("typed", "stored", "login_as"),
    [
        ("MiXed@Example.COM", "mixed@example.com", "MIXED@EXAMPLE.COM"),
        ("  spaced@example.com  ", "spaced@example.com", "Spaced@Example.com"),
    ],
)
async def test_emails_stored_lower_case_and_compared_case_insensitively(
    app: Quart, client: QuartClient, typed: str, stored: str, login_as: str
) -> None:
    assert await register(client, typed, PASSWORD) == 201
    assert rows(app, "SELECT email FROM users") == [(stored,)]
    assert await login(app, login_as, PASSWORD) == 200
    assert await register(app.test_client(), login_as, PASSWORD) == 200  # signs in (issue #16)
    assert await register(app.test_client(), login_as, "another passphrase 77") == 409


# concurrent sign-ups


async def test_concurrent_api_sign_ups_create_one_account(app: Quart) -> None:
    clients = [app.test_client() for _ in range(6)]
    statuses = await asyncio.gather(
        *(
            register(c, f"race{'@EXAMPLE.com' if i % 2 else '@example.com'}", PASSWORD)
            for i, c in enumerate(clients)
        )
    )
    assert sorted(statuses) == [200] * 5 + [201]  # the same password signs in (issue #16)
    assert rows(app, "SELECT email FROM users") == [("race@example.com",)]
    assert rows(app, "SELECT count(*) FROM sessions") == [(6,)]


async def test_concurrent_form_sign_ups_create_one_account(app: Quart) -> None:
    form = {"email": "race@example.com", "password": PASSWORD}
    responses = await asyncio.gather(
        *(app.test_client().post("/register", form=form) for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [303] * 5  # all signed in (issue #16)
    assert rows(app, "SELECT count(*) FROM users") == [(1,)]


@pytest.mark.parametrize("route", ["/api/register", "/api/password"])
async def test_strength_check_runs_off_the_event_loop(
    app: Quart, user: User, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """zxcvbn costs milliseconds of CPU per password: it must not run on the loop's thread."""
    real = passwords.zxcvbn
    threads: list[int] = []

    def watched(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(passwords, "zxcvbn", watched)
    new = "a long enough passphrase 42"
    if route == "/api/register":
        client = app.test_client()
        body = {"email": "new@example.com", "password": new}
    else:
        client = await authenticated_client(app, user)
        body = {"current_password": PASSWORD, "new_password": new}
    response = await client.post(route, json=body)
    assert response.status_code < 300
    assert threads and threading.get_ident() not in threads
