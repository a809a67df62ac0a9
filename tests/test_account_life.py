"""Email change, account deletion, export, re-authentication and REQUIRE_VERIFIED_EMAIL
(SPEC §11, §12 first bullet), with real mail.

Every flow reads what a real SMTP server on loopback received and follows the link in
it, through the HTML forms and the JSON API, on both engines. A session's proof of
identity is aged by writing its data through the store, as a later request would see it.
"""

# ruff: noqa: F811
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
from conftest import PASSWORD
from dbrows import rows, schema, settle
from quart import Quart
from quart.testing import QuartClient
from smtp import MailServer, links, mail_server  # noqa: F401
from test_api import error_body

from quart_auth_app import create_app
from quart_auth_app.sessions import PROVED_AT, hash_token
from quart_auth_app.store import Store, User
from quart_auth_app.testing import authenticated_client, create_user
from quart_auth_app.throttle import Throttle

PUBLIC_URL = "https://auth.example.test"
NEW = "ada@example.org"
WRONG = "not the password at all"
NEW_PASSWORD = "plum tractor velvet orbit"
INVALID_LINK = "This link is invalid or has expired."
REAUTH_WINDOW = 60
ACCOUNT_FAILURES = 3
CONFIRM_CHANGE = "Confirm your new email address"
EMAIL_CHANGED = "Your email address was changed"
GOODBYE = "Your account was deleted"
VERIFY = "Confirm your email address"
RESET = "Reset your password"


@pytest.fixture
def config(config: dict[str, Any], mail_server: MailServer) -> dict[str, Any]:
    return {
        **config,
        "MAIL_URL": mail_server.url,
        "MAIL_POLL_INTERVAL": 0.05,
        "PUBLIC_URL": PUBLIC_URL,
        "REAUTH_WINDOW": REAUTH_WINDOW,
        "THROTTLE_ACCOUNT_FAILURES": ACCOUNT_FAILURES,
    }


# --- helpers -----------------------------------------------------------------------------


def browser(app: Quart) -> QuartClient:
    """A fresh browser: no cookies."""
    return cast("QuartClient", app.test_client())


def store(app: Quart) -> Store:
    return app.extensions["auth_store"]  # type: ignore[no-any-return]


async def arrived(server: MailServer, address: str, subject: str) -> EmailMessage:
    """The one message titled `subject` to `address`, once it arrived."""
    deadline = time.monotonic() + 10
    while True:
        found = [m for m in server.to(address) if m["Subject"] == subject]
        if found:
            assert len(found) == 1, f"{len(found)} {subject!r} messages to {address}"
            return found[0]
        assert time.monotonic() < deadline, f"no {subject!r} message to {address}"
        await asyncio.sleep(0.02)


def link_path(message: EmailMessage, prefix: str) -> str:
    """The path of the message's one link under PUBLIC_URL + `prefix`, for the test client."""
    [link] = [url for url in links(message) if url.startswith(f"{PUBLIC_URL}{prefix}")]
    return urlsplit(link).path


async def outbox(app: Quart) -> list[tuple[str, str, str]]:
    """(kind, recipient, last_error) of every queued mail, oldest first, once all is sent."""
    deadline = time.monotonic() + 10
    pending = "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL"
    while rows(app, pending) != [(0,)]:
        assert time.monotonic() < deadline, "the outbox was not delivered within 10 s"
        await asyncio.sleep(0.02)
    return [
        (str(kind), str(recipient), str(error))
        for kind, recipient, error in rows(
            app, "SELECT kind, recipient, last_error FROM mail_outbox ORDER BY id"
        )
    ]


def account_row(app: Quart, user: User) -> tuple[str, bool] | None:
    """(email, email_verified) of the user's row, or None once it is gone."""
    found = rows(app, "SELECT email, email_verified FROM users WHERE id = ?", user.id)
    return (str(found[0][0]), bool(found[0][1])) if found else None


def event_kinds(app: Quart, user: User) -> list[str]:
    return [
        k for (k,) in rows(app, "SELECT kind FROM events WHERE user_id = ? ORDER BY id", user.id)
    ]


class Forms(HTMLParser):
    """The forms of a page: each one's action and its named fields with their values."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self.forms.append((found.get("action") or "", {}))
        elif tag in ("input", "textarea") and self.forms and found.get("name"):
            self.forms[-1][1][found["name"] or ""] = found.get("value") or ""


async def form_fields(page: Any, action: str) -> dict[str, str]:
    """The fields of the page's one form posting to `action`."""
    html = await page.get_data(as_text=True)
    [fields] = [fields for target, fields in Forms(html).forms if target == action]
    return fields


async def submit(client: QuartClient, page: Any, action: str, **typed: str) -> Any:
    """Fill in and post the page's form to `action`, as a browser would."""
    fields = await form_fields(page, action)
    return await client.post(action, form={**fields, **typed})


def location(response: Any) -> str:
    """The redirect's target on this site: path and query."""
    parts = urlsplit(response.headers["Location"])
    assert parts.netloc in ("", "localhost"), response.headers["Location"]
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def api_signed_in(app: Quart, email: str = "ada@example.com") -> QuartClient:
    """A client signed in through POST /api/login: its session has just proved its owner."""
    client = browser(app)
    response = await client.post("/api/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200
    return client


async def page_signed_in(app: Quart, email: str = "ada@example.com") -> QuartClient:
    """A browser signed in through the /login form."""
    client = browser(app)
    response = await client.post("/login", form={"email": email, "password": PASSWORD})
    assert response.status_code == 303
    return client


def cookie(client: QuartClient) -> str:
    return next(str(c.value) for c in client.cookie_jar or [] if c.name == "session")


async def proved(app: Quart, client: QuartClient, seconds_ago: float) -> None:
    """Make the client's session have last proved its owner `seconds_ago` seconds ago."""
    await settle(app)
    changed = {PROVED_AT: time.time() - seconds_ago}
    assert await store(app).merge_session_data(hash_token(cookie(client)), changed, [], time.time())


async def is_signed_in(client: QuartClient) -> bool:
    status = (await client.get("/api/me")).status_code
    assert status in (200, 401)
    return status == 200


async def ask_email_change(client: QuartClient, **fields: str) -> Any:
    return await client.post(
        "/api/email", json={"new_email": NEW, "current_password": PASSWORD, **fields}
    )


async def change_link(client: QuartClient, server: MailServer) -> str:
    """Ask to move the account to NEW (API); the path of the link mailed there."""
    response = await ask_email_change(client)
    assert response.status_code == 202
    return link_path(await arrived(server, NEW, CONFIRM_CHANGE), "/email/change/")


async def confirm_change(client: QuartClient, link: str) -> Any:
    """Open the mailed link and press its button."""
    page = await client.get(link)
    assert page.status_code == 200
    return await submit(client, page, "/email/change")


# --- email change ------------------------------------------------------------------------


async def test_email_change_link_goes_to_the_new_address_only(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await api_signed_in(app)
    response = await ask_email_change(client)
    assert response.status_code == 202
    assert NEW in (await response.get_json())["message"]
    message = await arrived(mail_server, NEW, CONFIRM_CHANGE)
    assert link_path(message, "/email/change/")
    assert await outbox(app) == [("email_change", NEW, "")]
    assert mail_server.to(user.email) == []
    assert account_row(app, user) == (user.email, False)


async def test_email_change_link_get_shows_a_confirm_page_and_changes_nothing(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    link = await change_link(await api_signed_in(app), mail_server)
    for _ in range(2):  # a mail scanner, then the owner
        page = await browser(app).get(link)
        assert page.status_code == 200
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert (await form_fields(page, "/email/change"))["token"] == link.rsplit("/", 1)[1]
    assert account_row(app, user) == (user.email, False)
    assert rows(app, "SELECT purpose, new_email FROM tokens") == [("email", NEW)]
    assert "email changed" not in event_kinds(app, user)
    assert [kind for kind, _, _ in await outbox(app)] == ["email_change"]


async def test_confirming_the_email_change_moves_verifies_records_and_tells_the_old_address(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await api_signed_in(app)
    link = await change_link(client, mail_server)
    response = await confirm_change(client, link)
    assert response.status_code == 303
    assert location(response) == "/account"
    assert account_row(app, user) == (NEW, True)
    assert event_kinds(app, user)[-1] == "email changed"
    notice = await arrived(mail_server, user.email, EMAIL_CHANGED)
    body = notice.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert user.email in text and NEW in text
    assert links(notice) == []  # nothing to follow in a notice
    assert await outbox(app) == [("email_change", NEW, ""), ("email_changed", user.email, "")]
    me = await (await client.get("/api/me")).get_json()
    assert (me["email"], me["email_verified"]) == (NEW, True)
    assert rows(app, "SELECT count(*) FROM tokens") == [(0,)]


async def test_after_an_email_change_sign_in_works_with_the_new_address_not_the_old(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await api_signed_in(app)
    assert (await confirm_change(client, await change_link(client, mail_server))).status_code == 303
    fresh = browser(app)
    old = await fresh.post("/api/login", json={"email": user.email, "password": PASSWORD})
    await error_body(old, 401, "invalid_credentials")
    new = await fresh.post("/api/login", json={"email": NEW, "password": PASSWORD})
    assert new.status_code == 200
    assert (await new.get_json())["id"] == user.id


async def test_an_email_change_link_works_once(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    link = await change_link(await api_signed_in(app), mail_server)
    elsewhere = browser(app)  # the new mailbox, opened signed out on another device
    page = await elsewhere.get(link)
    first = await submit(elsewhere, page, "/email/change")
    assert first.status_code == 303
    assert location(first) == "/login"
    again = await submit(elsewhere, page, "/email/change")
    assert again.status_code == 400
    assert INVALID_LINK in await again.get_data(as_text=True)
    assert account_row(app, user) == (NEW, True)
    assert event_kinds(app, user).count("email changed") == 1
    assert [kind for kind, _, _ in await outbox(app)] == ["email_change", "email_changed"]


async def test_email_change_to_an_address_taken_meanwhile_is_409_and_keeps_the_old_email(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    link = await change_link(await api_signed_in(app), mail_server)
    other = await browser(app).post("/api/register", json={"email": NEW, "password": NEW_PASSWORD})
    assert other.status_code == 201
    response = await confirm_change(browser(app), link)
    assert response.status_code == 409
    assert "belongs to another account" in await response.get_data(as_text=True)
    assert account_row(app, user) == (user.email, False)
    assert "email changed" not in event_kinds(app, user)
    # The refused confirmation rolled back whole: the link is not used up (it would work
    # if the address became free again), and the old address was told nothing.
    assert rows(app, "SELECT user_id, new_email FROM tokens WHERE purpose = 'email'") == [
        (user.id, NEW)
    ]
    assert (await confirm_change(browser(app), link)).status_code == 409
    sent = await outbox(app)
    assert [kind for kind, _, _ in sent] == ["email_change", "verify_email"]
    assert mail_server.to(user.email) == []


async def test_an_email_change_kills_a_reset_link_mailed_to_the_old_address(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    anonymous = browser(app)
    forgot = await anonymous.post("/api/password/forgot", json={"email": user.email})
    assert forgot.status_code == 202
    reset = link_path(await arrived(mail_server, user.email, RESET), "/password/reset/")
    token = reset.rsplit("/", 1)[1]
    peek = browser(app)  # the link is alive before the change
    assert (await peek.get(reset)).status_code == 303
    assert (await peek.get("/password/reset")).status_code == 200
    client = await api_signed_in(app)
    assert (await confirm_change(client, await change_link(client, mail_server))).status_code == 303
    page = await browser(app).get(reset)  # now refused at the link itself
    assert page.status_code == 400
    assert INVALID_LINK in await page.get_data(as_text=True)
    api = await anonymous.post(
        "/api/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    await error_body(api, 400, "invalid_token")
    assert await api_signed_in(app, NEW)  # the password is unchanged


@pytest.mark.parametrize("same", ["ada@example.com", " ADA@Example.COM "])
async def test_email_change_to_ones_own_current_address_is_400(
    app: Quart, user: User, same: str
) -> None:
    client = await api_signed_in(app)
    response = await ask_email_change(client, new_email=same)
    body = await error_body(response, 400, "invalid_input")
    assert set(body["fields"]) == {"new_email"}
    assert rows(app, "SELECT count(*) FROM mail_outbox") == [(0,)]


async def test_api_email_change_with_a_wrong_password_is_403_and_mails_nothing(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await api_signed_in(app)
    response = await ask_email_change(client, current_password=WRONG)
    body = await error_body(response, 403, "wrong_password")
    assert set(body["fields"]) == {"current_password"}
    assert rows(app, "SELECT count(*) FROM mail_outbox") == [(0,)]
    assert event_kinds(app, user)[-1] == "email change failed"
    assert account_row(app, user) == (user.email, False)


async def test_html_email_change_with_a_wrong_password_is_403_and_mails_nothing(
    app: Quart, user: User
) -> None:
    client = await page_signed_in(app)
    page = await client.get("/account/email")
    assert page.status_code == 200
    response = await submit(client, page, "/account/email", new_email=NEW, current_password=WRONG)
    assert response.status_code == 403
    assert "The current password is not right." in await response.get_data(as_text=True)
    assert rows(app, "SELECT count(*) FROM mail_outbox") == [(0,)]


async def test_html_email_change_from_the_form_to_the_mailed_link(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await page_signed_in(app)
    page = await client.get("/account/email")
    assert page.status_code == 200
    response = await submit(client, page, "/account/email", new_email=NEW)
    assert response.status_code == 303
    assert location(response) == "/account"
    assert f"on its way to {NEW}" in await (await client.get("/account")).get_data(as_text=True)
    assert account_row(app, user) == (user.email, False)
    link = link_path(await arrived(mail_server, NEW, CONFIRM_CHANGE), "/email/change/")
    confirmed = await confirm_change(client, link)
    assert location(confirmed) == "/account"
    account = await (await client.get("/account")).get_data(as_text=True)
    assert f"Your email address is now {NEW}." in account
    assert account_row(app, user) == (NEW, True)
    assert await arrived(mail_server, user.email, EMAIL_CHANGED)


# --- deleting the account ----------------------------------------------------------------


def remains_of(app: Quart, user: User, throttle_keys: list[str]) -> dict[str, int]:
    """Rows of every table but the outbox that still hold the user: by id, by user_id, by
    the address anywhere in the row, and the user's throttle keys."""
    left: dict[str, int] = {}
    for table, columns in schema(app).items():
        if "outbox" in table or "mail" in table:
            continue  # the one place the address may stay (SPEC §11)
        found = 0
        if table == "users":
            found += len(rows(app, "SELECT id FROM users WHERE id = ?", user.id))
        if "user_id" in columns:
            found += len(rows(app, f"SELECT * FROM {table} WHERE user_id = ?", user.id))  # noqa: S608
        every = rows(app, f"SELECT * FROM {table}")  # noqa: S608
        found += sum(1 for row in every if user.email in repr(row))
        if table == "throttle":
            found += len(rows(app, "SELECT key FROM throttle WHERE key IN (?, ?)", *throttle_keys))
        if found:
            left[table] = found
    return left


async def keys_of(app: Quart, email: str) -> list[str]:
    """The throttle keys that count the address (HMACs under the app's secret)."""
    async with app.app_context():
        return [Throttle.key("account", email), Throttle.key("mail", email)]


async def test_api_delete_leaves_nothing_of_the_user_but_the_outbox(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await api_signed_in(app)
    elsewhere = await authenticated_client(app, user)  # another device's session
    failed = await browser(app).post("/api/login", json={"email": user.email, "password": WRONG})
    await error_body(failed, 401)  # counts against the account's throttle key
    assert (await client.post("/api/email/verify/resend")).status_code == 202  # a mail key
    await arrived(mail_server, user.email, VERIFY)  # and a verification token
    keys = await keys_of(app, user.email)
    assert len(rows(app, "SELECT key FROM throttle WHERE key IN (?, ?)", *keys)) == 2
    assert set(remains_of(app, user, keys)) >= {"users", "sessions", "events", "tokens", "throttle"}

    response = await client.delete("/api/me", json={"password": PASSWORD})
    assert response.status_code == 204
    ended = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert len(ended) == 1 and ("Max-Age=0" in ended[0] or "1970" in ended[0])
    await error_body(await client.get("/api/me"), 401)
    await error_body(await elsewhere.get("/api/me"), 401)
    goodbye = await arrived(mail_server, user.email, GOODBYE)
    assert links(goodbye) == []
    assert remains_of(app, user, keys) == {}
    assert rows(app, "SELECT user_id FROM mail_outbox WHERE kind = 'account_deleted'") == [(None,)]
    assert ("account_deleted", user.email, "") in await outbox(app)


@pytest.mark.parametrize("via", ["api", "html"])
async def test_delete_with_a_wrong_password_is_403_and_deletes_nothing(
    app: Quart, user: User, via: str
) -> None:
    client = await api_signed_in(app)
    if via == "api":
        response = await client.delete("/api/me", json={"password": WRONG})
        await error_body(response, 403, "wrong_password")
    else:
        response = await client.post("/account/delete", form={"password": WRONG})
        assert response.status_code == 403
        assert "The current password is not right." in await response.get_data(as_text=True)
    assert account_row(app, user) == (user.email, False)
    assert await is_signed_in(client)
    assert event_kinds(app, user)[-1] == "account deletion failed"
    assert rows(app, "SELECT count(*) FROM mail_outbox") == [(0,)]


async def test_html_delete_signs_out_and_mails_goodbye(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await page_signed_in(app)
    elsewhere = await authenticated_client(app, user)
    page = await client.get("/account/delete")
    assert page.status_code == 200
    response = await submit(client, page, "/account/delete")
    assert response.status_code == 303
    assert location(response) == "/"
    home = await client.get("/")
    assert "Your account has been deleted. Goodbye!" in await home.get_data(as_text=True)
    assert location(await client.get("/account")).startswith("/login")
    assert not await is_signed_in(elsewhere)
    assert account_row(app, user) is None
    assert await arrived(mail_server, user.email, GOODBYE)
    assert remains_of(app, user, await keys_of(app, user.email)) == {}


# --- export ------------------------------------------------------------------------------


def json_keys(value: Any) -> set[str]:
    """Every member name anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in json_keys(v)}
    return set()


async def test_export_gives_profile_live_sessions_events_and_no_secrets(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await api_signed_in(app)
    other = await authenticated_client(app, user)
    gone = await authenticated_client(app, user)
    await settle(app)
    rows(
        app,
        "UPDATE sessions SET expires_at = ? WHERE token_hash = ?",
        time.time() - 1,
        hash_token(cookie(gone)),
    )
    await error_body(
        await browser(app).post("/api/login", json={"email": user.email, "password": WRONG}),
        401,
    )
    assert (await client.post("/api/email/verify/resend")).status_code == 202
    verify_token = link_path(await arrived(mail_server, user.email, VERIFY), "/email/verify/")
    verify_token = verify_token.rsplit("/", 1)[1]

    response = await client.get("/api/me/export")
    assert response.status_code == 200
    body = await response.get_json()
    assert set(body) == {"profile", "sessions", "events", "passkeys"}
    assert body["profile"] == {
        "id": user.id,
        "email": user.email,
        "name": "Ada",
        "email_verified": False,
        "created_at": pytest.approx(user.created_at),
    }
    live = {
        str(sid)
        for (sid,) in rows(
            app,
            "SELECT id FROM sessions WHERE token_hash IN (?, ?)",
            hash_token(cookie(client)),
            hash_token(cookie(other)),
        )
    }
    assert len(live) == 2
    assert {s["id"] for s in body["sessions"]} == live
    assert {e["kind"] for e in body["events"]} >= {"sign-in", "sign-in failed"}
    assert body["passkeys"] == []

    serialized = await response.get_data(as_text=True)
    [(password_hash,)] = rows(app, "SELECT password_hash FROM users WHERE id = ?", user.id)
    secrets = [password_hash, password_hash[7:29], verify_token, hash_token(verify_token).hex()]
    for c in (client, other, gone):
        secrets += [cookie(c), hash_token(cookie(c)).hex()]
    for secret in secrets:
        assert secret not in serialized
    names = {name.lower() for name in json_keys(body)}
    assert not {n for n in names if any(w in n for w in ("hash", "token", "secret", "password"))}


async def test_html_export_is_a_json_attachment_with_the_same_content(
    app: Quart, user: User
) -> None:
    client = await page_signed_in(app)
    api = await (await client.get("/api/me/export")).get_json()
    response = await client.get("/account/export")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment") and '.json"' in disposition
    assert json.loads(await response.get_data(as_text=True)) == api
    assert api["profile"]["email_verified"] is False


# --- re-authentication (SPEC §12) --------------------------------------------------------


async def test_inside_the_window_api_email_change_and_delete_need_no_password(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await api_signed_in(app)
    await proved(app, client, REAUTH_WINDOW - 10)
    response = await client.post("/api/email", json={"new_email": NEW})
    assert response.status_code == 202
    assert await arrived(mail_server, NEW, CONFIRM_CHANGE)
    assert (await client.delete("/api/me", json={})).status_code == 204
    assert account_row(app, user) is None


@pytest.mark.parametrize("proof", ["expired", "never"])
async def test_outside_the_window_api_email_change_and_delete_are_403_reauthentication_required(
    app: Quart, user: User, proof: str
) -> None:
    if proof == "expired":
        client = await api_signed_in(app)
        await proved(app, client, REAUTH_WINDOW + 5)
    else:  # a session that never typed the password (the test helper's)
        client = await authenticated_client(app, user)
    change = await client.post("/api/email", json={"new_email": NEW})
    await error_body(change, 403, "reauthentication_required")
    delete = await client.delete("/api/me", json={})
    await error_body(delete, 403, "reauthentication_required")
    assert account_row(app, user) == (user.email, False)
    assert await is_signed_in(client)
    assert rows(app, "SELECT count(*) FROM mail_outbox") == [(0,)]


async def test_outside_the_window_the_password_in_the_request_is_enough(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await api_signed_in(app)
    await proved(app, client, REAUTH_WINDOW + 5)
    assert (await ask_email_change(client)).status_code == 202
    assert await arrived(mail_server, NEW, CONFIRM_CHANGE)


async def test_api_reauthenticate_204_opens_the_window_again(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = await api_signed_in(app)
    await proved(app, client, REAUTH_WINDOW + 5)
    await error_body(await client.delete("/api/me", json={}), 403, "reauthentication_required")
    response = await client.post("/api/reauthenticate", json={"password": PASSWORD})
    assert response.status_code == 204
    assert (await client.post("/api/email", json={"new_email": NEW})).status_code == 202
    assert (await client.delete("/api/me", json={})).status_code == 204
    assert account_row(app, user) is None


async def test_api_reauthenticate_wrong_password_is_403_and_throttled(
    app: Quart, user: User
) -> None:
    client = await authenticated_client(app, user)  # no device cookie: the account's limit
    for _ in range(ACCOUNT_FAILURES):
        wrong = await client.post("/api/reauthenticate", json={"password": WRONG})
        await error_body(wrong, 403, "wrong_password")
    right = await client.post("/api/reauthenticate", json={"password": PASSWORD})
    await error_body(right, 429, "too_many_attempts")
    assert 0 < int(right.headers["Retry-After"]) <= app.config["THROTTLE_WINDOW"]
    assert event_kinds(app, user).count("re-authentication failed") == ACCOUNT_FAILURES
    await error_body(await client.delete("/api/me", json={}), 403, "reauthentication_required")


@pytest.mark.parametrize("path", ["/account/delete", "/account/email"])
async def test_html_outside_the_window_asks_for_the_password_then_carries_on(
    app: Quart, user: User, path: str
) -> None:
    client = await page_signed_in(app)
    await proved(app, client, REAUTH_WINDOW + 5)
    response = await client.get(path)
    assert response.status_code in (302, 303)
    assert location(response) == f"/reauthenticate?next={path}"
    page = await client.get(location(response))
    assert page.status_code == 200
    assert (await form_fields(page, "/reauthenticate"))["next"] == path
    wrong = await submit(client, page, "/reauthenticate", password=WRONG)
    assert wrong.status_code == 403
    assert "Location" not in wrong.headers
    right = await submit(client, page, "/reauthenticate", password=PASSWORD)
    assert right.status_code == 303
    assert location(right) == path
    assert (await client.get(path)).status_code == 200


async def test_html_delete_posted_after_the_window_ran_out_asks_for_the_password(
    app: Quart, user: User
) -> None:
    client = await page_signed_in(app)
    page = await client.get("/account/delete")
    await proved(app, client, REAUTH_WINDOW + 5)  # the form stayed open too long
    response = await submit(client, page, "/account/delete")
    assert response.status_code == 303
    assert location(response) == "/reauthenticate?next=/account/delete"
    assert account_row(app, user) == (user.email, False)


@pytest.mark.parametrize(
    "target", ["//evil.example", "https://evil.example/account", "/\\evil.example", "javascript:x"]
)
async def test_reauthenticate_does_not_follow_an_off_site_next(
    app: Quart, user: User, target: str
) -> None:
    client = await page_signed_in(app)
    page = await client.get("/reauthenticate", query_string={"next": target})
    assert page.status_code == 200
    assert (await form_fields(page, "/reauthenticate"))["next"] == "/"
    response = await client.post("/reauthenticate", form={"password": PASSWORD, "next": target})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


# --- REQUIRE_VERIFIED_EMAIL --------------------------------------------------------------

GRACE = "grace@example.com"


@pytest.fixture
async def strict_app(config: dict[str, Any]) -> AsyncIterator[Quart]:
    """The app with REQUIRE_VERIFIED_EMAIL on."""
    app = create_app({**config, "REQUIRE_VERIFIED_EMAIL": True})
    async with app.test_app():
        yield app


async def registered(app: Quart) -> QuartClient:
    """Grace signs up through the API (which mails her a verification link) and is signed in."""
    client = browser(app)
    response = await client.post("/api/register", json={"email": GRACE, "password": NEW_PASSWORD})
    assert response.status_code == 201
    return client


async def test_unverified_user_signs_in_but_pages_redirect_to_check_email(
    strict_app: Quart,
) -> None:
    await registered(strict_app)
    client = browser(strict_app)
    response = await client.post("/login", form={"email": GRACE, "password": NEW_PASSWORD})
    assert response.status_code == 303
    for path in ("/protected", "/account"):
        redirected = await client.get(path)
        assert redirected.status_code in (302, 303)
        assert location(redirected) == "/email/unverified"
    page = await client.get("/email/unverified")
    assert page.status_code == 200
    assert GRACE in await page.get_data(as_text=True)


async def test_unverified_api_is_403_email_unverified_but_me_works(strict_app: Quart) -> None:
    client = await registered(strict_app)
    await error_body(await client.get("/api/sessions"), 403, "email_unverified")
    me = await client.get("/api/me")
    assert me.status_code == 200
    assert (await me.get_json())["email_verified"] is False


async def test_following_the_mailed_verification_link_opens_the_site(
    strict_app: Quart, mail_server: MailServer
) -> None:
    client = await registered(strict_app)
    link = link_path(await arrived(mail_server, GRACE, VERIFY), "/email/verify/")
    page = await client.get(link)
    assert page.status_code == 200
    response = await submit(client, page, "/email/verify")
    assert response.status_code == 303
    assert location(response) == "/account"
    assert (await client.get("/protected")).status_code == 200
    assert (await client.get("/account")).status_code == 200
    assert (await client.get("/api/sessions")).status_code == 200
    assert (await (await client.get("/api/me")).get_json())["email_verified"] is True
    assert rows(strict_app, "SELECT email_verified FROM users WHERE email = ?", GRACE) in (
        [(1,)],
        [(True,)],
    )


# --- a deleted account's id and what still points at it ---------------------------------
# SQLite's `id INTEGER PRIMARY KEY` (no AUTOINCREMENT) hands the highest id out again once
# its account is deleted; PostgreSQL's identity column never does.

# SQLite gives the newest account's id again to the next one once it is deleted (users.id
# is INTEGER PRIMARY KEY); PostgreSQL's identity column never does. Nothing of a deleted
# account may then act for the next one: its unsent mail is deleted with it, mail queued
# before an account existed is dropped, and device cookies are signed with the account's
# creation time.
BOTH = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture
async def retrying_app(config: dict[str, Any]) -> AsyncIterator[Quart]:
    """The app, retrying a failed delivery within moments."""
    app = create_app({**config, "MAIL_RETRY_DELAY": 0.2})
    async with app.test_app():
        yield app


async def delete_then_register(app: Quart, client: QuartClient) -> int:
    """The signed-in account is deleted; someone else signs up at once. Their id."""
    assert (await client.delete("/api/me", json={"password": PASSWORD})).status_code == 204
    response = await browser(app).post(
        "/api/register", json={"email": GRACE, "password": NEW_PASSWORD}
    )
    assert response.status_code == 201
    return int((await response.get_json())["id"])


@pytest.mark.parametrize("db_config", BOTH, indirect=True)
async def test_a_change_link_queued_before_deletion_never_moves_the_next_account(
    retrying_app: Quart, mail_server: MailServer
) -> None:
    """Ada asks to move to NEW while the relay is down, deletes her account; Grace signs up.
    The queued change mail must be dropped, not made into a link for Grace's account."""
    app = retrying_app
    await create_user(app, "ada@example.com", "Ada", PASSWORD)  # the newest account
    client = await api_signed_in(app)
    mail_server.stop()
    assert (await ask_email_change(client)).status_code == 202
    grace = await delete_then_register(app, client)
    mail_server.start()
    sent = await outbox(app)
    for message in mail_server.to(NEW):  # whoever reads NEW follows what arrives there
        await confirm_change(browser(app), link_path(message, "/email/change/"))
    assert rows(app, "SELECT email FROM users WHERE id = ?", grace) == [(GRACE,)]
    assert mail_server.to(NEW) == []
    assert [kind for kind, *_ in sent if kind == "email_change"] == []  # deleted with Ada


@pytest.mark.parametrize("db_config", BOTH, indirect=True)
async def test_a_deleted_accounts_device_cookie_is_no_known_device_of_the_next_account(
    app: Quart, user: User
) -> None:
    """A browser known to the deleted account must get the account's limit on the next
    one, not a known device's own (larger, separate) allowance."""
    old_browser = await api_signed_in(app)  # holds a device cookie naming Ada's id
    await delete_then_register(app, old_browser)
    wrong = {"email": GRACE, "password": WRONG}
    for _ in range(ACCOUNT_FAILURES):
        await error_body(await old_browser.post("/api/login", json=wrong), 401)
    await error_body(await old_browser.post("/api/login", json=wrong), 429)


async def test_delete_also_drops_the_deleting_browsers_device_throttle_key(
    app: Quart, user: User
) -> None:
    client = await api_signed_in(app)  # a device cookie: its failures count on its own key
    await error_body(await client.post("/api/reauthenticate", json={"password": WRONG}), 403)
    assert len(rows(app, "SELECT key FROM throttle WHERE key LIKE 'device:%'")) == 1
    assert (await client.delete("/api/me", json={})).status_code == 204  # within the window
    assert rows(app, "SELECT key FROM throttle WHERE key LIKE 'device:%'") == []


async def test_a_change_link_queued_before_a_password_change_is_dead(
    retrying_app: Quart, mail_server: MailServer
) -> None:
    """Someone asks to move the account to their address while the relay is down; the
    owner then changes the password, which ends every outstanding link (SPEC §11). The
    mail still waiting must not become a live link once the relay is back."""
    app = retrying_app
    user = await create_user(app, "ada@example.com", "Ada", PASSWORD)
    intruder = await api_signed_in(app)
    mail_server.stop()
    assert (await ask_email_change(intruder)).status_code == 202
    owner = await api_signed_in(app)
    change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert (await owner.post("/api/password", json=change)).status_code == 204
    assert not await is_signed_in(intruder)
    mail_server.start()
    await outbox(app)
    for message in mail_server.to(NEW):
        await confirm_change(browser(app), link_path(message, "/email/change/"))
    assert account_row(app, user) == (user.email, False)
