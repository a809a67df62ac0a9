"""Forgot and reset password, email verification, with real mail (SPEC §11).

Every flow reads the message a real SMTP server (aiosmtpd on loopback) received and
follows the link in it, on both engines.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient
from smtp import MailServer, links
from test_equal_cost import normalised

from quart_auth_app import create_app
from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client

NEW_PASSWORD = "plum tractor velvet orbit"
PUBLIC_URL = "https://auth.example.test"
SENT = re.compile(r"If an account exists for (\S+), a link to reset its password is on its way")


@pytest.fixture
def config(config: dict[str, Any], mail_server: MailServer) -> dict[str, Any]:
    return {
        **config,
        "MAIL_URL": mail_server.url,
        "MAIL_POLL_INTERVAL": 0.05,
        "MAIL_RETRY_DELAY": 0.05,
        "PUBLIC_URL": PUBLIC_URL,
    }


async def mailed_link(server: MailServer, address: str, path: str, count: int = 1) -> str:
    """The link to `path` in the `count`-th such message to `address`, once it arrived."""
    deadline = time.monotonic() + 10
    while True:
        found = [url for m in server.to(address) for url in links(m) if path in url]
        if len(found) >= count:
            break
        assert time.monotonic() < deadline, f"no message {count} with {path} to {address}"
        await _pause()
    link = found[count - 1]
    assert link.startswith(f"{PUBLIC_URL}{path}")
    return link


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.02)


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


def local(link: str) -> str:
    """The link's path, for the test client."""
    return urlsplit(link).path


async def forgot(client: QuartClient, email: str) -> Any:
    return await client.post("/api/password/forgot", json={"email": email})


# --- forgot: the same for known and unknown addresses ----------------------------------------


async def test_forgot_answers_identically_for_known_and_unknown_emails(
    app: Quart, user: User
) -> None:
    client = app.test_client()
    api = [await forgot(client, email) for email in (user.email, "ghost@example.com")]
    assert [r.status_code for r in api] == [202, 202]
    bodies = [(await r.get_data(as_text=True)).replace(e, "EMAIL") for r, e in
              zip(api, (user.email, "ghost@example.com"), strict=True)]  # fmt: skip
    assert bodies[0] == bodies[1]
    assert "It works for 60 minutes." in bodies[0]
    pages = []
    for email in (user.email, "ghost@example.com"):
        response = await app.test_client().post("/password/forgot", form={"email": email})
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
        pages.append((await response.get_data(as_text=True)).replace(email, "EMAIL"))
    assert pages[0] == pages[1]
    assert SENT.search(pages[0].replace("EMAIL", "x@example.com"))


@pytest.mark.parametrize("db_config", ["sqlite"], indirect=True)
async def test_forgot_runs_the_same_statements_for_known_and_unknown_emails(
    app: Quart, user: User
) -> None:
    """By construction: the request only counts and queues; the sender finds out later."""
    store = app.extensions["auth_store"]

    async def traced(email: str) -> list[str]:
        seen: list[str] = []
        connections = [store._writer, *store._readers]
        for db in connections:
            await db.set_trace_callback(lambda sql: seen.append(normalised(sql)))
        response = await forgot(app.test_client(), email)
        assert response.status_code == 202
        for db in connections:
            await db.set_trace_callback(None)
        return [sql for sql in seen if "mail_outbox SET" not in sql and "FROM mail_outbox" not in sql
                and "tokens" not in sql and "FROM users" not in sql]  # fmt: skip

    await traced("warm@example.com")
    known = await traced(user.email)
    unknown = await traced("ghost@example.com")
    assert known == unknown
    assert any("INSERT INTO mail_outbox" in sql for sql in known)
    assert not any("users" in sql for sql in known)  # the request never looks the account up


async def test_forgot_takes_the_same_time_for_known_and_unknown_emails(
    app: Quart, user: User
) -> None:
    """Sign test over interleaved pairs in random order: neither is consistently slower."""
    app.config.update(THROTTLE_MAIL_PER_EMAIL=10_000, THROTTLE_MAIL_PER_ADDRESS=10_000)
    client = app.test_client()
    rng = random.Random(11)

    async def attempt(email: str) -> float:
        start = time.perf_counter()
        response = await forgot(client, email)
        elapsed = time.perf_counter() - start
        assert response.status_code == 202
        return elapsed

    slower_known = 0
    pairs = 40
    for n in range(pairs):
        order = [user.email, f"ghost{n}@example.com"]
        rng.shuffle(order)
        timed = {email: await attempt(email) for email in order}
        slower_known += timed[user.email] > timed[order[0] if order[0] != user.email else order[1]]
    assert 8 <= slower_known <= pairs - 8, slower_known


async def test_only_a_known_address_gets_a_reset_mail(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = app.test_client()
    assert (await forgot(client, "ghost@example.com")).status_code == 202
    assert (await forgot(client, user.email)).status_code == 202
    await mailed_link(mail_server, user.email, "/password/reset/")
    assert mail_server.to("ghost@example.com") == []
    [(note,)] = rows(
        app, "SELECT last_error FROM mail_outbox WHERE recipient = ?", "ghost@example.com"
    )
    assert note.startswith("dropped")


async def test_forgot_is_throttled_per_email_and_per_address(app: Quart, user: User) -> None:
    app.config.update(THROTTLE_MAIL_PER_EMAIL=2, THROTTLE_MAIL_PER_ADDRESS=5)
    client = app.test_client()
    for email in (user.email, "ghost@example.com"):  # known and unknown alike
        assert [(await forgot(client, email)).status_code for _ in range(3)] == [202, 202, 429]
    # two more addresses from the same client: the per-address limit (5 counted) is reached
    statuses = [(await forgot(client, f"other{n}@example.com")).status_code for n in range(3)]
    assert statuses == [202, 429, 429]
    response = await forgot(client, "fresh@example.com")
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0


async def test_links_come_from_public_url_never_from_host(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = app.test_client()
    response = await client.post(
        "/api/password/forgot",
        json={"email": user.email},
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )
    assert response.status_code == 202
    link = await mailed_link(mail_server, user.email, "/password/reset/")
    assert urlsplit(link).netloc == "auth.example.test"
    message = mail_server.to(user.email)[0]
    assert "evil.example" not in message.as_string()


# --- reset -----------------------------------------------------------------------------------


async def test_reset_by_mailed_link_over_html(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    browser = app.test_client()
    await browser.post("/password/forgot", form={"email": user.email})
    link = await mailed_link(mail_server, user.email, "/password/reset/")
    token = token_of(link)

    response = await browser.get(local(link))  # the token leaves the address bar
    assert response.status_code == 303
    assert response.headers["Location"] == "/password/reset"
    assert token not in response.headers["Location"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    page = await browser.get("/password/reset")
    assert page.status_code == 200
    html = await page.get_data(as_text=True)
    assert token not in html and user.email in html

    response = await browser.post("/password/reset", form={"new_password": NEW_PASSWORD})
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    login = await browser.get("/login")
    assert "Your password has been reset. Please sign in." in await login.get_data(as_text=True)
    ok = await app.test_client().post(
        "/api/login", json={"email": user.email, "password": NEW_PASSWORD}
    )
    assert ok.status_code == 200
    old = await app.test_client().post(
        "/api/login", json={"email": user.email, "password": PASSWORD}
    )
    assert old.status_code == 401
    # the owner is told, and the account's log says so
    await mail_server.wait_for(2)
    [notice] = [m for m in mail_server.to(user.email) if "changed" in m["Subject"]]
    assert "reset" in notice.get_body(("plain",)).get_content()
    kinds = [k for (k,) in rows(app, "SELECT kind FROM events WHERE user_id = ?", user.id)]
    assert "password reset" in kinds


async def test_a_links_get_never_uses_the_token_up(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    """Mail scanners follow links: any number of GETs leave the token usable."""
    await forgot(app.test_client(), user.email)
    link = await mailed_link(mail_server, user.email, "/password/reset/")
    for _ in range(3):
        scanner = app.test_client()
        assert (await scanner.get(local(link))).status_code == 303
        assert (await scanner.get("/password/reset")).status_code == 200
    response = await app.test_client().post(
        "/api/password/reset", json={"token": token_of(link), "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204


async def test_a_reset_link_works_once(app: Quart, user: User, mail_server: MailServer) -> None:
    await forgot(app.test_client(), user.email)
    token = token_of(await mailed_link(mail_server, user.email, "/password/reset/"))
    body = {"token": token, "new_password": NEW_PASSWORD}
    client = app.test_client()
    assert (await client.post("/api/password/reset", json=body)).status_code == 204
    again = await client.post(
        "/api/password/reset", json={**body, "new_password": "x" + NEW_PASSWORD}
    )
    assert again.status_code == 400
    assert (await again.get_json())["error"] == "invalid_token"
    page = app.test_client()
    await page.get(f"/password/reset/{token}")
    response = await page.get("/password/reset")
    assert response.status_code == 400
    html = await response.get_data(as_text=True)
    assert "This link is invalid or has expired." in html and "/password/forgot" in html


async def test_an_expired_reset_link_is_refused(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    await forgot(app.test_client(), user.email)
    token = token_of(await mailed_link(mail_server, user.email, "/password/reset/"))
    rows(app, "UPDATE tokens SET expires_at = ?", time.time() - 1)
    response = await app.test_client().post(
        "/api/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 400 and (await response.get_json())["error"] == "invalid_token"
    assert (await app.test_client().post(
        "/api/login", json={"email": user.email, "password": PASSWORD})).status_code == 200  # fmt: skip


async def test_forged_and_malformed_tokens_are_refused(app: Quart, user: User) -> None:
    client = app.test_client()
    for token in ("x", "A" * 43, "é" * 10, "A" * 129):
        response = await client.post(
            "/api/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert response.status_code == 400, token
    for path in ("/password/reset/" + "A" * 500, "/password/reset/x", "/password/reset"):
        response = await client.get(path)
        assert response.status_code == 400, path
        assert "This link is invalid or has expired." in await response.get_data(as_text=True)
    assert not [c for c in client.cookie_jar or [] if c.name == "session"]  # nothing stored


async def test_a_weak_new_password_keeps_the_link_usable(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    await forgot(app.test_client(), user.email)
    token = token_of(await mailed_link(mail_server, user.email, "/password/reset/"))
    client = app.test_client()
    weak = await client.post(
        "/api/password/reset", json={"token": token, "new_password": "password1"}
    )
    assert weak.status_code == 400 and "new_password" in (await weak.get_json())["fields"]
    ok = await client.post(
        "/api/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert ok.status_code == 204


async def test_a_reset_ends_every_session_even_remembered_ones_on_another_node(
    app: Quart, user: User, mail_server: MailServer, config: dict[str, Any]
) -> None:
    here = await authenticated_client(app, user)
    other_node = create_app(config)  # a second app on the same database
    async with other_node.test_app():
        remembered = await authenticated_client(other_node, user, remember=True)
        assert (await remembered.get("/api/me")).status_code == 200
        await forgot(app.test_client(), user.email)
        token = token_of(await mailed_link(mail_server, user.email, "/password/reset/"))
        response = await app.test_client().post(
            "/api/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert response.status_code == 204
        assert (await remembered.get("/api/me")).status_code == 401
    assert (await here.get("/api/me")).status_code == 401
    assert rows(app, "SELECT count(*) FROM sessions WHERE user_id = ?", user.id) == [(0,)]


async def test_the_first_used_link_kills_every_other_outstanding_link(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client = app.test_client()
    await forgot(client, user.email)
    first = token_of(await mailed_link(mail_server, user.email, "/password/reset/", 1))
    await forgot(client, user.email)
    second = token_of(await mailed_link(mail_server, user.email, "/password/reset/", 2))
    # a verification link outstanding too
    await (await authenticated_client(app, user)).post("/api/email/verify/resend")
    verify = token_of(await mailed_link(mail_server, user.email, "/email/verify/", 1))
    ok = await client.post(
        "/api/password/reset", json={"token": second, "new_password": NEW_PASSWORD}
    )
    assert ok.status_code == 204
    dead = await client.post(
        "/api/password/reset", json={"token": first, "new_password": "x" + NEW_PASSWORD}
    )
    assert dead.status_code == 400
    assert (await client.post("/api/email/verify", json={"token": verify})).status_code == 400


async def test_two_resets_with_one_link_at_once_one_wins(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    import asyncio

    await forgot(app.test_client(), user.email)
    token = token_of(await mailed_link(mail_server, user.email, "/password/reset/"))
    passwords = [NEW_PASSWORD, "another fine passphrase 7"]
    attempts = [{"token": token, "new_password": p} for p in passwords]
    responses = await asyncio.gather(
        *(app.test_client().post("/api/password/reset", json=body) for body in attempts)
    )
    assert sorted(r.status_code for r in responses) == [204, 400]
    winner = passwords[[r.status_code for r in responses].index(204)]
    login = await app.test_client().post(
        "/api/login", json={"email": user.email, "password": winner}
    )
    assert login.status_code == 200


# --- verification ------------------------------------------------------------------------------


async def test_sign_up_mails_a_verification_link(app: Quart, mail_server: MailServer) -> None:
    client = app.test_client()
    body = {"email": "grace@example.com", "password": "correct horse battery staple"}
    assert (await client.post("/api/register", json=body)).status_code == 201
    assert (await (await client.get("/api/me")).get_json())["email_verified"] is False
    link = await mailed_link(mail_server, "grace@example.com", "/email/verify/")
    page = await app.test_client().get(local(link))  # GET: a confirm button, nothing done
    assert page.status_code == 200
    assert "Verify my address" in await page.get_data(as_text=True)
    assert (await (await client.get("/api/me")).get_json())["email_verified"] is False
    confirm = await app.test_client().post("/email/verify", form={"token": token_of(link)})
    assert confirm.status_code == 303
    assert (await (await client.get("/api/me")).get_json())["email_verified"] is True
    again = await app.test_client().post("/api/email/verify", json={"token": token_of(link)})
    assert again.status_code == 400
    account = await client.get("/account")
    assert "verified" in await account.get_data(as_text=True)


async def test_resend_verification_is_throttled_and_silent_once_verified(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    app.config.update(THROTTLE_MAIL_PER_EMAIL=2)
    client = await authenticated_client(app, user)
    statuses = [(await client.post("/api/email/verify/resend")).status_code for _ in range(3)]
    assert statuses == [202, 202, 429]
    link = await mailed_link(mail_server, user.email, "/email/verify/", 2)
    assert (
        await client.post("/api/email/verify", json={"token": token_of(link)})
    ).status_code == 204
    rows(app, "DELETE FROM throttle")
    before = len(mail_server.messages)
    assert (await client.post("/api/email/verify/resend")).status_code == 202
    assert rows(app, "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL") == [(0,)]
    assert len(mail_server.messages) == before


def test_the_access_log_never_names_a_link_token() -> None:
    """SPEC §13: the launcher's access log shows `[token]` where a mailed link carries one."""
    from hypercorn.config import Config

    from quart_auth_app.serve import RedactingLogger

    logger = RedactingLogger(Config())
    for path in ("/password/reset/SECRET", "/email/verify/SECRET", "/email/change/SECRET"):
        scope = {
            "type": "http", "method": "GET", "path": path, "query_string": b"a=1",
            "http_version": "1.1", "headers": [], "client": ("127.0.0.1", 1), "scheme": "http",
        }  # fmt: skip
        atoms = logger.atoms(scope, {"status": 303, "headers": []}, 0.01)  # type: ignore[arg-type]
        assert all("SECRET" not in atoms[key] for key in ("r", "R", "U", "Uq")), atoms
        assert atoms["U"].endswith("/[token]")
    assert Config().logger_class is RedactingLogger  # what the workers build their logger from
