"""The account page and API: sessions, revocation, password change, security events (SPEC §3-§5)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest
from conftest import PASSWORD
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app.sessions import expiry, hash_token
from quart_auth_app.store import SessionRecord, Store, User
from quart_auth_app.testing import create_user

FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
HOME, PHONE = "192.0.2.10", "198.51.100.20"
NEW_PASSWORD = "an entirely different passphrase 91"


def store(app: Quart) -> Store:
    return app.extensions["auth_store"]  # type: ignore[no-any-return]


async def sessions_of(app: Quart, user: User) -> list[SessionRecord]:
    return await store(app).select_sessions_of_user(user.id, expiry(app.config, time.time()))


def token_of(client: QuartClient) -> str:
    return next(c.value for c in client.cookie_jar or [] if c.name == "session")


def with_token(app: Quart, token: str) -> QuartClient:
    client = app.test_client()
    client.set_cookie("localhost", "session", token)
    return client


class Device:
    """A browser on one address, signing in through the real form or API."""

    def __init__(self, app: Quart, agent: str, address: str) -> None:
        self.client = app.test_client()
        self.headers = {"User-Agent": agent}
        self.scope = {"client": (address, 50000)}

    async def open(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        return await self.client.open(
            path, method=method, headers=self.headers, scope_base=self.scope, **kwargs
        )

    async def sign_in(self, email: str, password: str = PASSWORD) -> Any:
        return await self.open("/login", "POST", form={"email": email, "password": password})

    @property
    def token(self) -> str:
        return token_of(self.client)


async def signed_in(app: Quart, user: User, agent: str, address: str) -> Device:
    device = Device(app, agent, address)
    assert (await device.sign_in(user.email)).status_code == 303
    return device


async def is_signed_in(client: QuartClient) -> bool:
    status = (await client.get("/api/me")).status_code
    assert status in (200, 401)
    return status == 200


@dataclass
class Row:
    classes: list[str]
    text: str = ""
    times: list[str] = field(default_factory=list)


class _Table(HTMLParser):
    """The body rows of the table with a given class: their classes, text and <time> stamps."""

    def __init__(self, table_class: str) -> None:
        super().__init__()
        self.table_class, self.depth, self.in_body = table_class, 0, False
        self.rows: list[Row] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "table":
            inside = self.depth or self.table_class in (names.get("class") or "").split()
            self.depth += 1 if inside else 0
        elif self.depth and tag == "tbody":
            self.in_body = True
        elif self.depth and self.in_body and tag == "tr":
            self.rows.append(Row((names.get("class") or "").split()))
        elif self.depth and self.rows and tag == "time":
            self.rows[-1].times.append(names.get("datetime") or "")

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag == "table":
            self.depth -= 1
        elif tag == "tbody":
            self.in_body = False

    def handle_data(self, data: str) -> None:
        if self.depth and self.in_body and self.rows:
            self.rows[-1].text += data


def table(html: str, table_class: str) -> list[Row]:
    parser = _Table(table_class)
    parser.feed(html)
    return parser.rows


# --- the sessions list ---------------------------------------------------------------------------


async def test_account_lists_sessions_readably_and_marks_the_current_one(
    app: Quart, user: User
) -> None:
    laptop = await signed_in(app, user, FIREFOX, HOME)
    await signed_in(app, user, CHROME, PHONE)
    response = await laptop.open("/account")
    assert response.status_code == 200
    html = await response.get_data(as_text=True)
    rows = table(html, "sessions")
    assert len(rows) == 2
    current = [row for row in rows if "current" in row.classes]
    assert len(current) == 1
    assert "Firefox 128 on Ubuntu" in current[0].text and HOME in current[0].text
    assert "this device" in current[0].text
    [other] = [row for row in rows if "current" not in row.classes]
    assert "Chrome 126 on Windows" in other.text and PHONE in other.text
    assert "this device" not in other.text
    for row in rows:  # created and last seen, readable, with the exact time on hover
        assert len(row.times) == 2 and all(t.endswith("UTC") for t in row.times)
        assert "just now" in row.text
    assert not any("Mozilla/5.0" in row.text for row in rows)  # not the raw header


async def test_api_lists_sessions_with_exactly_one_current(app: Quart, user: User) -> None:
    laptop = await signed_in(app, user, FIREFOX, HOME)
    phone = await signed_in(app, user, CHROME, PHONE)
    response = await laptop.open("/api/sessions")
    assert response.status_code == 200
    listed = (await response.get_json())["sessions"]
    assert {s["ip"] for s in listed} == {HOME, PHONE}
    assert [s["user_agent"] for s in listed if s["current"]] == [FIREFOX]
    stored = {r.id: r for r in await sessions_of(app, user)}
    assert {s["id"] for s in listed} == set(stored)
    body = await response.get_data(as_text=True)
    for token in (laptop.token, phone.token):  # ids are neither the token nor its hash
        assert token not in body and hash_token(token).hex() not in body
    for s in listed:
        assert s["created_at"] <= s["last_seen"] <= time.time() + 1


async def test_sessions_of_other_users_are_not_listed(app: Quart, user: User) -> None:
    bob = await create_user(app, "bob@example.com", "Bob", PASSWORD)
    await signed_in(app, bob, CHROME, PHONE)
    ada = await signed_in(app, user, FIREFOX, HOME)
    listed = (await (await ada.open("/api/sessions")).get_json())["sessions"]
    assert [s["ip"] for s in listed] == [HOME]
    html = await (await ada.open("/account")).get_data(as_text=True)
    assert PHONE not in html and "Chrome" not in html


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/sessions"),
        ("DELETE", "/api/sessions/whatever"),
        ("POST", "/api/sessions/revoke-others"),
        ("POST", "/api/password"),
    ],
)
async def test_api_account_routes_need_a_session(
    client: QuartClient, method: str, path: str
) -> None:
    response = await client.open(path, method=method, json={})
    assert response.status_code in (400, 401)
    if path != "/api/password":
        assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/account"),
        ("POST", "/account/sessions/whatever/revoke"),
        ("POST", "/account/sessions/revoke-others"),
        ("POST", "/account/password"),
    ],
)
async def test_account_pages_need_a_session(client: QuartClient, method: str, path: str) -> None:
    response = await client.open(path, method=method, form={})
    assert response.status_code in (302, 303)
    assert response.headers["Location"].startswith("/login?next=")


# --- revoking ------------------------------------------------------------------------------------


async def _revoke(device: Device, kind: str, session_id: str) -> Any:
    if kind == "api":
        return await device.open(f"/api/sessions/{session_id}", "DELETE")
    return await device.open(f"/account/sessions/{session_id}/revoke", "POST")


@pytest.mark.parametrize("kind", ["html", "api"])
async def test_revoked_session_is_anonymous_at_once(app: Quart, user: User, kind: str) -> None:
    laptop = await signed_in(app, user, FIREFOX, HOME)
    phone = await signed_in(app, user, CHROME, PHONE)
    [phone_row] = [r for r in await sessions_of(app, user) if r.ip == PHONE]
    phone_token = phone.token
    assert await is_signed_in(phone.client)

    response = await _revoke(laptop, kind, phone_row.id)
    assert response.status_code == (204 if kind == "api" else 303)
    assert not await is_signed_in(phone.client)
    assert (await phone.open("/protected")).status_code in (302, 303)
    assert await store(app).select_session_by_hash(hash_token(phone_token)) is None
    assert not await is_signed_in(with_token(app, phone_token))
    assert await is_signed_in(laptop.client)
    assert [r.ip for r in await sessions_of(app, user)] == [HOME]


@pytest.mark.parametrize("kind", ["html", "api"])
async def test_another_users_session_cannot_be_revoked(app: Quart, user: User, kind: str) -> None:
    bob = await create_user(app, "bob@example.com", "Bob", PASSWORD)
    bobs = await signed_in(app, bob, CHROME, PHONE)
    [bob_row] = await sessions_of(app, bob)
    ada = await signed_in(app, user, FIREFOX, HOME)

    for session_id in (bob_row.id, "no-such-session", bob_row.token_hash.hex(), bobs.token):
        response = await _revoke(ada, kind, session_id)
        assert response.status_code == 404
    assert [r.id for r in await sessions_of(app, bob)] == [bob_row.id]
    assert await is_signed_in(bobs.client)
    kinds = [e.kind for e in await store(app).select_events_of_user(bob.id, 50)]
    assert "session revoked" not in kinds


@pytest.mark.parametrize("kind", ["html", "api"])
async def test_revoke_others_keeps_only_this_session(app: Quart, user: User, kind: str) -> None:
    bob = await create_user(app, "bob@example.com", "Bob", PASSWORD)
    bobs = await signed_in(app, bob, CHROME, PHONE)
    laptop = await signed_in(app, user, FIREFOX, HOME)
    others = [await signed_in(app, user, CHROME, PHONE) for _ in range(2)]

    if kind == "api":
        response = await laptop.open("/api/sessions/revoke-others", "POST", json={})
        assert response.status_code == 200
        assert await response.get_json() == {"revoked": 2}
    else:
        response = await laptop.open("/account/sessions/revoke-others", "POST")
        assert response.status_code == 303
        page = await (await laptop.open("/account")).get_data(as_text=True)
        assert "Signed out 2 other session(s)." in page
    for other in others:
        assert not await is_signed_in(other.client)
    assert await is_signed_in(laptop.client)
    assert [r.ip for r in await sessions_of(app, user)] == [HOME]
    assert await is_signed_in(bobs.client)


# --- password change -----------------------------------------------------------------------------


async def _change(device: Device, kind: str, current: str, new: str) -> Any:
    body = {"current_password": current, "new_password": new}
    if kind == "api":
        return await device.open("/api/password", "POST", json=body)
    return await device.open("/account/password", "POST", form=body)


async def _password_works(app: Quart, user: User, password: str) -> bool:
    status = (await Device(app, FIREFOX, HOME).sign_in(user.email, password)).status_code
    assert status in (303, 401)
    return status == 303


@pytest.mark.parametrize("kind", ["html", "api"])
async def test_password_change_requires_the_current_password(
    app: Quart, user: User, kind: str
) -> None:
    laptop = await signed_in(app, user, FIREFOX, HOME)
    phone = await signed_in(app, user, CHROME, PHONE)
    for current, status, message in (
        ("not my password", 403, "The current password is not right."),
        ("", 400, "Please enter your current password."),  # as at sign-in: not a guess
    ):
        response = await _change(laptop, kind, current, NEW_PASSWORD)
        assert response.status_code == status
        if kind == "api":
            body = await response.get_json()
            assert body["fields"]["current_password"] == message
        else:
            assert message in await response.get_data(as_text=True)
    stored = await store(app).select_user_by_id(user.id)
    assert stored is not None and stored.password_hash == user.password_hash
    assert await is_signed_in(phone.client) and await is_signed_in(laptop.client)
    assert token_of(laptop.client) == laptop.token


@pytest.mark.parametrize("kind", ["html", "api"])
async def test_weak_new_password_is_refused(app: Quart, user: User, kind: str) -> None:
    laptop = await signed_in(app, user, FIREFOX, HOME)
    for weak in ("password", "short", user.email):
        response = await _change(laptop, kind, PASSWORD, weak)
        assert response.status_code == 400
        if kind == "api":
            assert "new_password" in (await response.get_json())["fields"]
    stored = await store(app).select_user_by_id(user.id)
    assert stored is not None and stored.password_hash == user.password_hash


@pytest.mark.parametrize("kind", ["html", "api"])
async def test_password_change_ends_other_sessions_and_rotates_this_one(
    app: Quart, user: User, kind: str
) -> None:
    laptop = await signed_in(app, user, FIREFOX, HOME)
    phone = await signed_in(app, user, CHROME, PHONE)
    old_token = laptop.token

    response = await _change(laptop, kind, PASSWORD, NEW_PASSWORD)
    assert response.status_code == (204 if kind == "api" else 303)
    assert "session=" in response.headers.get("Set-Cookie", "")
    new_token = laptop.token
    assert new_token != old_token

    assert not await is_signed_in(with_token(app, old_token))  # the old cookie is worthless
    assert not await is_signed_in(phone.client)  # every other session ended
    assert await is_signed_in(with_token(app, new_token))  # the new one works
    [row] = await sessions_of(app, user)
    assert row.token_hash == hash_token(new_token)
    assert await _password_works(app, user, NEW_PASSWORD)
    assert not await _password_works(app, user, PASSWORD)


async def test_password_change_keeps_remember_me(app: Quart, user: User) -> None:
    laptop = Device(app, FIREFOX, HOME)
    form = {"email": user.email, "password": PASSWORD, "remember": "1"}
    assert (await laptop.open("/login", "POST", form=form)).status_code == 303
    response = await _change(laptop, "api", PASSWORD, NEW_PASSWORD)
    assert response.status_code == 204
    assert "Max-Age=" in response.headers["Set-Cookie"]
    [row] = await sessions_of(app, user)
    assert row.remember


async def test_guessing_through_password_change_is_throttled(app: Quart, user: User) -> None:
    laptop = await signed_in(app, user, FIREFOX, HOME)  # a known browser: its own allowance
    limit = int(app.config["THROTTLE_DEVICE_FAILURES"])
    for n in range(limit):
        assert (await _change(laptop, "api", f"guess {n}", NEW_PASSWORD)).status_code == 403
    locked = await _change(laptop, "api", PASSWORD, NEW_PASSWORD)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
    stored = await store(app).select_user_by_id(user.id)
    assert stored is not None and stored.password_hash == user.password_hash


# --- security events -----------------------------------------------------------------------------


async def test_security_events_are_recorded_with_ip_and_agent(app: Quart, user: User) -> None:
    laptop = Device(app, FIREFOX, HOME)
    assert (await laptop.sign_in(user.email, "wrong password")).status_code == 401
    assert (await laptop.sign_in(user.email)).status_code == 303
    phone = await signed_in(app, user, CHROME, PHONE)
    [phone_row] = [r for r in await sessions_of(app, user) if r.ip == PHONE]
    assert (await _revoke(laptop, "api", phone_row.id)).status_code == 204
    assert (await laptop.open("/api/sessions/revoke-others", "POST", json={})).status_code == 200
    assert (await _change(laptop, "api", "wrong password", NEW_PASSWORD)).status_code == 403
    assert (await _change(laptop, "api", PASSWORD, NEW_PASSWORD)).status_code == 204
    assert (await laptop.open("/logout", "POST")).status_code == 303
    assert phone.token  # the phone signed in, once

    events = await store(app).select_events_of_user(user.id, 50)
    got = [(e.kind, e.ip, e.user_agent) for e in reversed(events)]
    assert got == [
        ("sign-in failed", HOME, FIREFOX),
        ("sign-in", HOME, FIREFOX),
        ("sign-in", PHONE, CHROME),
        ("session revoked", HOME, FIREFOX),  # revoking the others, none left, wrote nothing
        ("password change failed", HOME, FIREFOX),
        ("password changed", HOME, FIREFOX),
        ("sign-out", HOME, FIREFOX),
    ]
    assert all(e.created_at <= time.time() for e in events)


async def test_account_shows_the_latest_events(app: Quart, user: User) -> None:
    bob = await create_user(app, "bob@example.com", "Bob", PASSWORD)
    await Device(app, CHROME, "203.0.113.99").sign_in(bob.email, "wrong password")
    await Device(app, CHROME, PHONE).sign_in(user.email, "wrong password")
    laptop = await signed_in(app, user, FIREFOX, HOME)
    html = await (await laptop.open("/account")).get_data(as_text=True)
    rows = table(html, "events")
    assert len(rows) == 2
    first, second = (row.text.lower() for row in rows)
    assert "sign-in" in first and "failed" not in first
    assert HOME in first and "firefox 128 on ubuntu" in first and len(rows[0].times) == 1
    assert "sign-in failed" in second and PHONE in second and "chrome 126 on windows" in second
    assert "203.0.113.99" not in html  # Bob's log is his own


async def test_account_shows_at_most_the_configured_number_of_events(
    app: Quart, user: User
) -> None:
    shown = int(app.config["EVENTS_SHOWN"])
    for _ in range(shown + 5):
        await store(app).insert_event(user.id, "sign-in", HOME, FIREFOX, time.time())
    laptop = await signed_in(app, user, CHROME, PHONE)
    html = await (await laptop.open("/account")).get_data(as_text=True)
    rows = table(html, "events")
    assert len(rows) == shown
    assert PHONE in rows[0].text  # newest first


async def test_event_fields_are_escaped(app: Quart, user: User) -> None:
    laptop = await signed_in(app, user, "<script>alert(1)</script>", HOME)
    html = await (await laptop.open("/account")).get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html
