"""Lockouts the owner survives (SPEC §7): device cookies, HMAC keys, IPv6 per /64.

An attacker who knows an email locks the account for every browser that has never
signed in to it; the owner's own browser (holding a device cookie) still signs in,
from any address, and that browser's own mistakes count against it alone.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app.store import User
from quart_auth_app.testing import create_user

ACCOUNT_LIMIT = 3
DEVICE_LIMIT = 2
ADDRESS_LIMIT = 4
HOME, PHONE_NET, ATTACKER = "198.51.100.20", "192.0.2.77", "203.0.113.9"
KINDS = ["api", "html"]


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    return {
        **config,
        "THROTTLE_ACCOUNT_FAILURES": ACCOUNT_LIMIT,
        "THROTTLE_DEVICE_FAILURES": DEVICE_LIMIT,
        "THROTTLE_ADDRESS_FAILURES": ADDRESS_LIMIT,
    }


async def sign_in(client: QuartClient, kind: str, email: str, password: str, address: str) -> int:
    scope = {"client": (address, 40000)}
    if kind == "api":
        body = {"email": email, "password": password}
        response = await client.post("/api/login", json=body, scope_base=scope)
    else:
        form = {"email": email, "password": password}
        response = await client.post("/login", form=form, scope_base=scope)
    return int(response.status_code)


def ok(kind: str) -> int:
    return 200 if kind == "api" else 303


async def known_browser(app: Quart, kind: str, user: User) -> QuartClient:
    """The owner's browser: it signed in once (and so holds a device cookie), then out."""
    browser = app.test_client()
    assert await sign_in(browser, kind, user.email, PASSWORD, HOME) == ok(kind)
    assert (await browser.post("/api/logout")).status_code == 204
    return browser


async def lock_out(app: Quart, kind: str, user: User) -> None:
    attacker = app.test_client()
    for _ in range(ACCOUNT_LIMIT):
        assert await sign_in(attacker, kind, user.email, "guess", ATTACKER) == 401
    assert await sign_in(attacker, kind, user.email, PASSWORD, ATTACKER) == 429


@pytest.mark.parametrize("kind", KINDS)
async def test_owner_with_a_device_cookie_signs_in_while_locked_out(
    app: Quart, user: User, kind: str
) -> None:
    browser = await known_browser(app, kind, user)
    await lock_out(app, kind, user)
    stranger = app.test_client()  # a browser that never signed in: locked out like the attacker
    assert await sign_in(stranger, kind, user.email, PASSWORD, PHONE_NET) == 429
    # the owner's browser, from another address altogether
    assert await sign_in(browser, kind, user.email, PASSWORD, PHONE_NET) == ok(kind)
    assert (await browser.get("/api/me")).status_code == 200


@pytest.mark.parametrize("kind", KINDS)
async def test_a_known_browser_fails_against_itself_only(app: Quart, user: User, kind: str) -> None:
    browser = await known_browser(app, kind, user)
    for _ in range(DEVICE_LIMIT):
        assert await sign_in(browser, kind, user.email, "typo", HOME) == 401
    assert await sign_in(browser, kind, user.email, PASSWORD, HOME) == 429  # this device: full
    other = app.test_client()  # the account itself was never charged
    for _ in range(ACCOUNT_LIMIT - 1):
        assert await sign_in(other, kind, user.email, "typo", PHONE_NET) == 401
    assert await sign_in(other, kind, user.email, PASSWORD, PHONE_NET) == ok(kind)


async def test_a_device_cookie_counts_only_for_its_own_account(app: Quart, user: User) -> None:
    bob = await create_user(app, "bob@example.com", "Bob", PASSWORD)
    attacker = await known_browser(app, "api", bob)  # the attacker's own account's cookie
    await lock_out(app, "api", user)
    assert await sign_in(attacker, "api", user.email, PASSWORD, ATTACKER) == 429


@pytest.mark.parametrize(
    "forge",
    [
        lambda value: value[:-1] + ("0" if value[-1] != "0" else "1"),  # signature changed
        lambda value: "1" + value,  # another account's id, same signature
        lambda value: "x" * 300,
        lambda value: "",
    ],
    ids=["bad-signature", "other-account", "oversized", "empty"],
)
async def test_forged_device_cookies_give_no_trust(app: Quart, user: User, forge: Any) -> None:
    browser = await known_browser(app, "api", user)
    name = app.config["DEVICE_COOKIE_NAME"]
    [cookie] = [c for c in browser.cookie_jar if c.name == name]
    await lock_out(app, "api", user)
    forged = app.test_client()
    forged.set_cookie("localhost", name, forge(cookie.value))
    assert await sign_in(forged, "api", user.email, PASSWORD, HOME) == 429


async def test_device_cookie_attributes(app: Quart, user: User) -> None:
    response = await app.test_client().post(
        "/login", form={"email": user.email, "password": PASSWORD}
    )
    [device] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("device=")]
    assert "HttpOnly" in device and "SameSite=Lax" in device and "Path=/" in device
    assert f"Max-Age={app.config['DEVICE_COOKIE_LIFETIME']}" in device
    failed = await app.test_client().post("/login", form={"email": user.email, "password": "x"})
    assert not any(h.startswith("device=") for h in failed.headers.getlist("Set-Cookie"))


async def test_throttle_keys_hold_no_plaintext(app: Quart, user: User) -> None:
    typed = ["ada@example.com", "my secret password typed in the wrong box", "ghost@example.com"]
    for email in typed:
        await sign_in(app.test_client(), "api", email, "wrong", ATTACKER)
    keys = [key for (key,) in rows(app, "SELECT key FROM throttle")]
    assert len(keys) == len(typed) + 1  # one per typed email, one for the address
    for key in keys:
        assert not any(part in key for part in (*typed, ATTACKER, "ada", "secret"))
        kind, _, digest = key.partition(":")
        assert kind in ("account", "network") and len(digest) == 32


@pytest.mark.parametrize(
    ("first", "same", "other"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1"),
        ("::ffff:203.0.113.5", "203.0.113.5", "203.0.113.6"),
    ],
    ids=["ipv6-per-64", "ipv4-mapped"],
)
async def test_addresses_are_counted_per_network(
    app: Quart, first: str, same: str, other: str
) -> None:
    for n in range(ADDRESS_LIMIT):  # a different (unknown) account each time
        address = first if n % 2 == 0 else same
        assert await sign_in(app.test_client(), "api", f"n{n}@x.org", "pw", address) == 401
    assert await sign_in(app.test_client(), "api", "late@x.org", "pw", same) == 429
    assert await sign_in(app.test_client(), "api", "late@x.org", "pw", other) == 401


@pytest.mark.parametrize("kind", KINDS)
async def test_the_browser_that_signed_up_is_known_too(app: Quart, kind: str) -> None:
    """Found by hand: a person who registered, signed out and was then locked out by an
    attacker could not get back in from the very browser they signed up with."""
    browser = app.test_client()
    body = {"email": "new@example.com", "password": PASSWORD}
    scope = {"client": (HOME, 40000)}
    if kind == "api":
        created = await browser.post("/api/register", json=body, scope_base=scope)
    else:
        created = await browser.post("/register", form=body, scope_base=scope)
    assert created.status_code in (201, 303)
    assert (await browser.post("/api/logout")).status_code == 204
    user = await app.extensions["auth_store"].select_user_by_email("new@example.com")
    await lock_out(app, kind, user)
    assert await sign_in(browser, kind, user.email, PASSWORD, PHONE_NET) == ok(kind)
