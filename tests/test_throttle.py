"""Sign-in and sign-up throttling (SPEC §7): per account, per address, in the database."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app import agents, create_app, passwords
from quart_auth_app.purge import purge_expired
from quart_auth_app.sessions import expiry
from quart_auth_app.store import Store, User
from quart_auth_app.testing import authenticated_client, create_user
from quart_auth_app.throttle import Throttle

ACCOUNT_LIMIT = 3
ADDRESS_LIMIT = 8
SIGNUP_LIMIT = 2
DEVICE_LIMIT = 4
WINDOW = 60
ATTACKER = "203.0.113.7"
NEIGHBOUR = "203.0.113.8"
GHOST = "ghost@example.com"  # no such account


async def tkey(app: Quart, kind: str, value: str) -> str:
    """The stored throttle key for `value` (an HMAC, never the plaintext)."""
    async with app.app_context():
        return Throttle.key(kind, value)


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    return {
        **config,
        "THROTTLE_ACCOUNT_FAILURES": ACCOUNT_LIMIT,
        "THROTTLE_ADDRESS_FAILURES": ADDRESS_LIMIT,
        "THROTTLE_SIGNUPS_PER_ADDRESS": SIGNUP_LIMIT,
        "THROTTLE_WINDOW": WINDOW,
        "THROTTLE_DEVICE_FAILURES": DEVICE_LIMIT,
    }


@asynccontextmanager
async def app_with(config: dict[str, Any], **overrides: Any) -> AsyncIterator[Quart]:
    """Another app on the test's database, with some keys changed."""
    app = create_app({**config, **overrides})
    async with app.test_app():
        yield app


def store(app: Quart) -> Store:
    return app.extensions["auth_store"]  # type: ignore[no-any-return]


async def sign_in(
    client: QuartClient,
    kind: str,
    email: str,
    password: str,
    address: str = ATTACKER,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST credentials to /login (kind "html") or /api/login (kind "api") from `address`."""
    scope = {"client": (address, 40000)}
    if kind == "html":
        form = {"email": email, "password": password}
        return await client.post("/login", form=form, scope_base=scope, headers=headers)
    body = {"email": email, "password": password}
    return await client.post("/api/login", json=body, scope_base=scope, headers=headers)


async def body_of(response: Any, kind: str) -> Any:
    return await response.get_json() if kind == "api" else await response.get_data(as_text=True)


def assert_throttled(response: Any, window: float = WINDOW) -> None:
    assert response.status_code == 429
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window
    assert "Set-Cookie" not in response.headers


KINDS = ["html", "api"]


@pytest.mark.parametrize("kind", KINDS)
async def test_account_locks_at_the_configured_count(
    app: Quart, client: QuartClient, user: User, kind: str
) -> None:
    for _ in range(ACCOUNT_LIMIT):
        assert (await sign_in(client, kind, user.email, "wrong password")).status_code == 401
    locked = await sign_in(client, kind, user.email, PASSWORD)  # even the right password
    assert_throttled(locked)
    if kind == "api":
        assert (await locked.get_json())["error"] == "too_many_attempts"
    else:
        assert "Too many attempts" in await locked.get_data(as_text=True)
    state = await store(app).select_throttle(
        await tkey(app, "account", user.email), time.time(), WINDOW
    )
    assert state is not None and state[0] >= ACCOUNT_LIMIT
    assert await store(app).count_sessions() == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_unknown_accounts_are_throttled_the_same_way(
    client: QuartClient, user: User, kind: str
) -> None:
    seen: dict[str, list[Any]] = {}
    for email, address in ((user.email, ATTACKER), (GHOST, NEIGHBOUR)):
        seen[email] = [
            await sign_in(client, kind, email, "wrong password", address)
            for _ in range(ACCOUNT_LIMIT + 2)
        ]
    real, ghost = seen[user.email], seen[GHOST]
    assert [r.status_code for r in real] == [401] * ACCOUNT_LIMIT + [429, 429]
    assert [r.status_code for r in ghost] == [r.status_code for r in real]
    for mine, theirs in zip(real, ghost, strict=True):
        assert sorted(k for k, _ in mine.headers.items()) == sorted(
            k for k, _ in theirs.headers.items()
        )
        mine_body, theirs_body = await body_of(mine, kind), await body_of(theirs, kind)
        if kind == "html":  # the page keeps the email typed; nothing else may differ
            mine_body = mine_body.replace(user.email, GHOST)
        assert mine_body == theirs_body
    assert abs(int(real[-1].headers["Retry-After"]) - int(ghost[-1].headers["Retry-After"])) <= 1


@pytest.mark.parametrize("kind", KINDS)
async def test_success_resets_the_account_count(
    app: Quart, client: QuartClient, user: User, kind: str
) -> None:
    for _ in range(ACCOUNT_LIMIT - 1):
        assert (await sign_in(client, kind, user.email, "wrong password")).status_code == 401
    assert (await sign_in(client, kind, user.email, PASSWORD)).status_code in (200, 303)
    other = app.test_client()  # no device cookie: the account's allowance, full again
    for _ in range(ACCOUNT_LIMIT):
        assert (await sign_in(other, kind, user.email, "wrong password")).status_code == 401
    assert_throttled(await sign_in(other, kind, user.email, "wrong password"))


async def test_emails_differing_in_case_share_one_count(client: QuartClient, user: User) -> None:
    for email in ("ADA@example.com", "Ada@Example.com", " ada@EXAMPLE.COM "):
        assert (await sign_in(client, "api", email, "wrong password")).status_code == 401
    assert_throttled(await sign_in(client, "api", user.email, PASSWORD))


async def test_lockout_expires(user: User, config: dict[str, Any]) -> None:
    async with app_with(config, THROTTLE_WINDOW=1) as short:
        quick = short.test_client()
        for _ in range(ACCOUNT_LIMIT):
            assert (await sign_in(quick, "api", user.email, "wrong password")).status_code == 401
        locked = await sign_in(quick, "api", user.email, PASSWORD)
        assert_throttled(locked, window=1)
        await asyncio.sleep(1.2)
        assert (await sign_in(quick, "api", user.email, PASSWORD)).status_code == 200
        # stale counters are swept by the periodic purge
        await sign_in(quick, "api", GHOST, "wrong password")
        await asyncio.sleep(1.2)
        await purge_expired(short.config, store(short))
        assert (
            await store(short).select_throttle(
                await tkey(short, "account", GHOST), time.time(), 1e9
            )
            is None
        )


@pytest.mark.parametrize("kind", KINDS)
async def test_other_users_are_unaffected(
    app: Quart, client: QuartClient, user: User, kind: str
) -> None:
    bob = await create_user(app, "bob@example.com", "Bob", PASSWORD)
    for _ in range(ACCOUNT_LIMIT + 1):
        await sign_in(client, kind, user.email, "wrong password")
    assert_throttled(await sign_in(client, kind, user.email, PASSWORD))
    for address in (ATTACKER, NEIGHBOUR):  # from the attacker's address too
        other = app.test_client()
        assert (await sign_in(other, kind, bob.email, PASSWORD, address)).status_code in (200, 303)
        assert (await other.get("/api/me")).status_code == 200


@pytest.mark.parametrize("kind", KINDS)
async def test_address_locks_across_accounts(client: QuartClient, user: User, kind: str) -> None:
    for n in range(ADDRESS_LIMIT):  # password spraying: one guess per account
        response = await sign_in(client, kind, f"victim{n}@example.com", "Summer2024!")
        assert response.status_code == 401
    assert_throttled(await sign_in(client, kind, "victim-next@example.com", "Summer2024!"))
    assert_throttled(await sign_in(client, kind, user.email, PASSWORD))
    elsewhere = await sign_in(client, kind, user.email, PASSWORD, NEIGHBOUR)
    assert elsewhere.status_code in (200, 303)


async def test_forged_forwarded_for_does_not_escape_the_limit(
    app: Quart, client: QuartClient, user: User
) -> None:
    for n in range(ADDRESS_LIMIT):
        forged = {"X-Forwarded-For": f"198.51.100.{n}", "Forwarded": f"for=198.51.100.{n}"}
        response = await sign_in(client, "api", f"victim{n}@example.com", "x" * 8, headers=forged)
        assert response.status_code == 401
    fresh = {"X-Forwarded-For": "192.0.2.99", "X-Real-IP": "192.0.2.99"}
    assert_throttled(
        await sign_in(client, "api", "victim-next@example.com", "x" * 8, headers=fresh)
    )
    # and what is recorded is the socket's address
    ok = await sign_in(app.test_client(), "api", user.email, PASSWORD, NEIGHBOUR, headers=fresh)
    assert ok.status_code == 200
    [session] = await _sessions_of(app, user)
    assert session.ip == NEIGHBOUR


async def _sessions_of(app: Quart, user: User) -> list[Any]:
    return await store(app).select_sessions_of_user(user.id, expiry(app.config, time.time()))


async def test_trusted_proxy_address_is_used(user: User, config: dict[str, Any]) -> None:
    proxy = "10.0.0.1"  # every request arrives from the proxy's socket
    async with app_with(config, TRUSTED_PROXY_HOPS=1) as app:
        client = app.test_client()
        for n in range(ADDRESS_LIMIT):
            via = {"X-Forwarded-For": ATTACKER}
            response = await sign_in(client, "api", f"v{n}@example.com", "x" * 8, proxy, via)
            assert response.status_code == 401
        attacker = {"X-Forwarded-For": ATTACKER}
        assert_throttled(await sign_in(client, "api", "v@example.com", "x" * 8, proxy, attacker))
        # a client-supplied value is ignored: the proxy appends the real one, and that is used
        spoofed = {"X-Forwarded-For": f"{NEIGHBOUR}, {ATTACKER}"}
        assert_throttled(await sign_in(client, "api", "v@example.com", "x" * 8, proxy, spoofed))
        neighbour = {"X-Forwarded-For": NEIGHBOUR}
        ok = await sign_in(client, "api", user.email, PASSWORD, proxy, neighbour)
        assert ok.status_code == 200
        [session] = await _sessions_of(app, user)
        assert session.ip == NEIGHBOUR


async def test_without_a_trusted_proxy_the_proxy_is_the_client(user: User, app: Quart) -> None:
    proxy = "10.0.0.1"
    client = app.test_client()
    for n in range(ADDRESS_LIMIT):
        via = {"X-Forwarded-For": f"198.51.100.{n}"}
        await sign_in(client, "api", f"v{n}@example.com", "x" * 8, proxy, via)
    assert_throttled(await sign_in(client, "api", "v@example.com", "x" * 8, proxy))


async def _register(client: QuartClient, kind: str, email: str, address: str) -> Any:
    scope = {"client": (address, 40000)}
    body = {"email": email, "password": "a long enough passphrase 42"}
    if kind == "api":
        return await client.post("/api/register", json=body, scope_base=scope)
    return await client.post("/register", form=body, scope_base=scope)


async def test_strength_is_judged_only_after_the_attempt_is_counted(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zxcvbn is the costly step of a sign-up: a refused or malformed one never reaches it."""
    judged: list[str] = []
    real = passwords.weakness

    def counting(password: str, *args: Any) -> str | None:
        judged.append(password)
        return real(password, *args)

    monkeypatch.setattr(passwords, "weakness", counting)
    client = app.test_client()
    body = {"email": "not an email", "password": "p@$$w0rd" * 8}
    assert (await client.post("/api/register", json=body)).status_code == 400
    assert judged == []
    for n in range(SIGNUP_LIMIT):
        assert (await _register(client, "api", f"n{n}@example.com", ATTACKER)).status_code == 201
    assert len(judged) == SIGNUP_LIMIT
    assert_throttled(await _register(client, "api", "late@example.com", ATTACKER))
    assert len(judged) == SIGNUP_LIMIT


@pytest.mark.parametrize("kind", KINDS)
async def test_sign_ups_are_limited_per_address(app: Quart, kind: str) -> None:
    for n in range(SIGNUP_LIMIT):
        response = await _register(app.test_client(), kind, f"new{n}@example.com", ATTACKER)
        assert response.status_code in (201, 303)
    refused = await _register(app.test_client(), kind, "one-more@example.com", ATTACKER)
    assert_throttled(refused)
    assert await store(app).select_user_by_email("one-more@example.com") is None
    other = await _register(app.test_client(), kind, "neighbour@example.com", NEIGHBOUR)
    assert other.status_code in (201, 303)
    assert await store(app).select_user_by_email("neighbour@example.com") is not None


async def test_counts_are_shared_by_every_worker(user: User, config: dict[str, Any]) -> None:
    """Two app instances on one database stand for two Hypercorn workers (or two nodes)."""
    async with app_with(config) as first, app_with(config) as second:
        for n in range(ACCOUNT_LIMIT):
            app = (first, second)[n % 2]
            response = await sign_in(app.test_client(), "api", user.email, "wrong password")
            assert response.status_code == 401
        for app in (first, second):
            assert_throttled(await sign_in(app.test_client(), "api", user.email, PASSWORD))


async def test_concurrent_guesses_cannot_overshoot(app: Quart, user: User) -> None:
    guesses = [
        sign_in(app.test_client(), "api", user.email, f"guess number {n}") for n in range(12)
    ]
    statuses = sorted(r.status_code for r in await asyncio.gather(*guesses))
    assert statuses == [401] * ACCOUNT_LIMIT + [429] * (12 - ACCOUNT_LIMIT)


async def test_concurrent_spraying_from_one_address_cannot_overshoot(app: Quart) -> None:
    """A burst of guesses at many accounts from one address runs at most the address limit."""
    burst = ADDRESS_LIMIT * 3
    guesses = [
        sign_in(app.test_client(), "api", f"victim{n}@example.com", "Summer2024!")
        for n in range(burst)
    ]
    statuses = sorted(r.status_code for r in await asyncio.gather(*guesses))
    assert statuses == [401] * ADDRESS_LIMIT + [429] * (burst - ADDRESS_LIMIT)


async def test_concurrent_sign_ups_from_one_address_cannot_overshoot(app: Quart) -> None:
    burst = SIGNUP_LIMIT * 4
    attempts = [
        _register(app.test_client(), "api", f"burst{n}@example.com", ATTACKER) for n in range(burst)
    ]
    statuses = sorted(r.status_code for r in await asyncio.gather(*attempts))
    assert statuses == [201] * SIGNUP_LIMIT + [429] * (burst - SIGNUP_LIMIT)
    created = [await store(app).select_user_by_email(f"burst{n}@example.com") for n in range(burst)]
    assert sum(user is not None for user in created) == SIGNUP_LIMIT


async def test_successes_and_refusals_do_not_use_up_the_address_allowance(
    app: Quart, client: QuartClient, user: User
) -> None:
    for _ in range(ADDRESS_LIMIT + 2):  # successful sign-ins from the address are not failures
        assert (await sign_in(app.test_client(), "api", user.email, PASSWORD)).status_code == 200
    for _ in range(ACCOUNT_LIMIT):
        await sign_in(client, "api", user.email, "wrong password")
    for _ in range(ADDRESS_LIMIT):  # refused by the account's lock: no guess ran
        assert_throttled(await sign_in(client, "api", user.email, "wrong password"))
    left = ADDRESS_LIMIT - ACCOUNT_LIMIT
    for n in range(left):
        response = await sign_in(client, "api", f"victim{n}@example.com", "Summer2024!")
        assert response.status_code == 401
    assert_throttled(await sign_in(client, "api", "victim-next@example.com", "Summer2024!"))


@pytest.mark.parametrize("kind", KINDS)
async def test_disabled_throttle_never_refuses(
    user: User, config: dict[str, Any], kind: str
) -> None:
    async with app_with(config, THROTTLE_ENABLED=False) as app:
        client = app.test_client()
        for _ in range(ACCOUNT_LIMIT + ADDRESS_LIMIT + 2):
            assert (await sign_in(client, kind, user.email, "wrong password")).status_code == 401
        assert (await sign_in(client, kind, user.email, PASSWORD)).status_code in (200, 303)
        for n in range(SIGNUP_LIMIT + 1):
            response = await _register(app.test_client(), kind, f"n{n}@example.com", ATTACKER)
            assert response.status_code in (201, 303)
        for kind, value in (("account", user.email), ("network", ATTACKER), ("signup", ATTACKER)):
            key = await tkey(app, kind, value)
            assert await store(app).select_throttle(key, time.time(), 1e9) is None


async def test_successful_password_changes_do_not_use_up_the_allowance(
    app: Quart, user: User
) -> None:
    """Proving the current password forgives the account's count, as a sign-in does."""
    client = await authenticated_client(app, user)
    passwords = [PASSWORD] + [
        f"new passphrase number {n} for ada" for n in range(ACCOUNT_LIMIT + 2)
    ]
    for old, new in itertools.pairwise(passwords):
        body = {"current_password": old, "new_password": new}
        response = await client.post(
            "/api/password", json=body, scope_base={"client": (ATTACKER, 1)}
        )
        assert response.status_code == 204
    assert (await sign_in(app.test_client(), "api", user.email, passwords[-1])).status_code == 200


async def test_right_passwords_at_once_are_not_refused_for_each_other(
    app: Quart, user: User
) -> None:
    """Attempts in flight count against the limit; when they succeed they give their places
    back, and an attempt that found the account full meanwhile waits for that instead of
    being refused."""
    app.config["THROTTLE_IN_FLIGHT_WAIT"] = 1.0
    first = await sign_in(app.test_client(), "api", user.email, "wrong password")
    assert first.status_code == 401
    racers = [
        sign_in(app.test_client(), "api", user.email, PASSWORD, address=f"198.51.100.{n}")
        for n in range(ACCOUNT_LIMIT + 2)
    ]
    statuses = [r.status_code for r in await asyncio.gather(*racers)]
    assert statuses == [200] * (ACCOUNT_LIMIT + 2)


async def test_wrong_passwords_at_once_still_stop_at_the_limit(app: Quart, user: User) -> None:
    app.config["THROTTLE_IN_FLIGHT_WAIT"] = 1.0
    racers = [
        sign_in(app.test_client(), "api", user.email, "wrong", address=f"198.51.100.{n}")
        for n in range(ACCOUNT_LIMIT + 3)
    ]
    statuses = sorted(r.status_code for r in await asyncio.gather(*racers))
    assert statuses == [401] * ACCOUNT_LIMIT + [429] * 3


async def test_a_refused_attempt_only_reads(
    app: Quart, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before it is refused, a stranger's attempt costs reads only: no write, and no parse
    of its user agent (naming the device is for the event an admitted attempt records)."""
    for _ in range(ACCOUNT_LIMIT):
        assert (await sign_in(app.test_client(), "api", user.email, "wrong")).status_code == 401
    before = rows(app, "SELECT count(*), max(last_hit) FROM throttle")
    events = rows(app, "SELECT count(*) FROM events")

    def refuse(agent: str) -> Any:
        raise AssertionError(f"user agent parsed for a refused attempt: {agent[:30]}")

    agents.describe.cache_clear()
    monkeypatch.setattr(agents, "parse_user_agent", refuse)
    crafted = {"User-Agent": "Mozilla/5.0 (" + "c;" * 250 + ")"}
    for _ in range(3):
        refused = await sign_in(app.test_client(), "api", user.email, PASSWORD, headers=crafted)
        assert_throttled(refused)
    assert rows(app, "SELECT count(*), max(last_hit) FROM throttle") == before
    assert rows(app, "SELECT count(*) FROM events") == events
