"""Two-step sign-in: TOTP, recovery codes and the pending session (SPEC §12)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pyotp
import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient
from routes import every_request
from smtp import MailServer

from quart_auth_app.factors import code_hash
from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client, enable_totp, totp_code

NEW_PASSWORD = "plum tractor velvet orbit"
# RFC 6238 appendix B: the SHA-1 secret, and (time, 8-digit code); a 6-digit code is the
# last six digits of the same truncated value.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.fixture
def config(config: dict[str, Any], mail_server: MailServer) -> dict[str, Any]:
    return {**config, "MAIL_URL": mail_server.url, "MAIL_POLL_INTERVAL": 0.05}


class Clock:
    """The app's notion of now, moved by the test."""

    def __init__(self, app: Quart) -> None:
        self.now = time.time()
        app.extensions["auth_clock"] = lambda: self.now


@pytest.fixture
def clock(app: Quart) -> Clock:
    return Clock(app)


@pytest.fixture
async def secret(app: Quart, user: User) -> str:
    return await enable_totp(app, user)


async def pending(app: Quart, user: User, remember: bool = False) -> QuartClient:
    """A client whose right password left it waiting for the second factor."""
    client = app.test_client()
    body = {"email": user.email, "password": PASSWORD, "remember": remember}
    response = await client.post("/api/login", json=body)
    assert response.status_code == 200
    assert await response.get_json() == {
        "second_factor_required": True,
        "methods": ["totp", "recovery_code"],
    }
    return client


async def second(client: QuartClient, code: str) -> Any:
    return await client.post("/api/login/second-factor", json={"code": code})


async def test_rfc_6238_vectors_through_the_sign_in(app: Quart, user: User, clock: Clock) -> None:
    await enable_totp(app, user)
    # the RFC's secret, stored the way the app stores any
    async with app.app_context():
        from quart_auth_app.factors import _fernet

        encrypted = _fernet().encrypt(RFC_SECRET.encode()).decode()
    rows(app, "UPDATE totp SET secret = ?, last_step = 0 WHERE user_id = ?", encrypted, user.id)
    for at, code in RFC_VECTORS:
        clock.now = at
        client = await pending(app, user)
        response = await second(client, code[-6:])
        assert response.status_code == 200, (at, await response.get_data(as_text=True))
        assert (await client.get("/api/me")).status_code == 200


async def test_one_step_of_drift_is_accepted_two_are_refused(
    app: Quart, user: User, secret: str, clock: Clock
) -> None:
    base = (int(clock.now) // 30) * 30 + 15
    for offset, ok in [(-60, False), (60, False), (-30, True), (30, True)]:
        clock.now = base
        client = await pending(app, user)
        response = await second(client, totp_code(secret, base + offset))
        assert (response.status_code == 200) is ok, offset
        clock.now = base + 120  # the next case's step is later than any accepted one
        base += 120


async def test_a_code_is_accepted_once(app: Quart, user: User, secret: str, clock: Clock) -> None:
    code = totp_code(secret, clock.now)
    assert (await second(await pending(app, user), code)).status_code == 200
    replay = await second(await pending(app, user), code)
    assert replay.status_code == 401 and (await replay.get_json())["error"] == "invalid_code"
    # nor a code of an earlier step, still within the drift
    earlier = await second(await pending(app, user), totp_code(secret, clock.now - 30))
    assert earlier.status_code == 401


async def test_two_sign_ins_with_one_code_at_once_one_wins(
    app: Quart, user: User, secret: str
) -> None:
    clients = [await pending(app, user) for _ in range(2)]
    code = totp_code(secret)
    responses = await asyncio.gather(*(second(c, code) for c in clients))
    assert sorted(r.status_code for r in responses) == [200, 401]


async def enrolled(app: Quart, user: User) -> tuple[QuartClient, list[str], str]:
    """Turn TOTP on through the API; (the client, its recovery codes, the secret)."""
    client = await authenticated_client(app, user)
    await client.post("/api/reauthenticate", json={"password": PASSWORD})
    setup = await client.post("/api/2fa/totp")
    assert setup.status_code == 200
    body = await setup.get_json()
    assert body["otpauth_uri"].startswith("otpauth://totp/")
    assert pyotp.parse_uri(body["otpauth_uri"]).secret == body["secret"]
    confirm = await client.post("/api/2fa/totp/confirm", json={"code": totp_code(body["secret"])})
    assert confirm.status_code == 200
    codes = (await confirm.get_json())["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    return client, codes, body["secret"]


async def test_recovery_codes_work_once_and_are_stored_hashed(app: Quart, user: User) -> None:
    _, codes, _ = await enrolled(app, user)
    stored = {bytes(h) for (h,) in rows(app, "SELECT code_hash FROM recovery_codes")}
    assert stored == {code_hash(c) for c in codes}
    assert all(c.encode() not in h for c in codes for h in stored)
    assert (await second(await pending(app, user), codes[0].upper())).status_code == 200
    assert (await second(await pending(app, user), codes[0])).status_code == 401
    left = rows(app, "SELECT count(*) FROM recovery_codes WHERE user_id = ?", user.id)
    assert left == [(9,)]


async def test_one_recovery_code_used_twice_at_once_works_once(app: Quart, user: User) -> None:
    _, codes, _ = await enrolled(app, user)
    clients = [await pending(app, user) for _ in range(2)]
    responses = await asyncio.gather(*(second(c, codes[1]) for c in clients))
    assert sorted(r.status_code for r in responses) == [200, 401]


async def test_enrolment_needs_re_authentication_and_a_right_code(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    app.config["REAUTH_WINDOW"] = 0
    client = await authenticated_client(app, user)
    refused = await client.post("/api/2fa/totp")
    assert refused.status_code == 403
    assert (await refused.get_json())["error"] == "reauthentication_required"
    app.config["REAUTH_WINDOW"] = 900
    await client.post("/api/reauthenticate", json={"password": PASSWORD})
    secret = (await (await client.post("/api/2fa/totp")).get_json())["secret"]
    wrong = await client.post("/api/2fa/totp/confirm", json={"code": "000000"})
    assert wrong.status_code == 400
    assert rows(app, "SELECT confirmed FROM totp") in ([(0,)], [(False,)])
    other = await authenticated_client(app, user)  # a session made before it turned on
    ok = await client.post("/api/2fa/totp/confirm", json={"code": totp_code(secret)})
    assert ok.status_code == 200
    assert (await client.get("/api/me")).status_code == 200  # this one carries on
    assert (await other.get("/api/me")).status_code == 401  # the epoch moved
    await mail_server.wait_for(1)
    assert any("turned on" in m["Subject"] for m in mail_server.to(user.email))
    kinds = [k for (k,) in rows(app, "SELECT kind FROM events WHERE user_id = ?", user.id)]
    assert "two-step sign-in turned on" in kinds


async def test_turning_it_off_needs_re_authentication_and_ends_older_sessions(
    app: Quart, user: User, mail_server: MailServer
) -> None:
    client, _, _ = await enrolled(app, user)
    before = await authenticated_client(app, user)
    app.config["REAUTH_WINDOW"] = 0
    assert (await client.delete("/api/2fa/totp")).status_code == 403
    app.config["REAUTH_WINDOW"] = 900
    await client.post("/api/reauthenticate", json={"password": PASSWORD})
    assert (await client.delete("/api/2fa/totp")).status_code == 204
    assert (await before.get("/api/me")).status_code == 401
    assert rows(app, "SELECT count(*) FROM recovery_codes") == [(0,)]
    login = await app.test_client().post(
        "/api/login", json={"email": user.email, "password": PASSWORD}
    )
    assert (await login.get_json())["email"] == user.email  # no second step any more
    deadline = time.monotonic() + 10
    while not any("turned off" in m["Subject"] for m in mail_server.to(user.email)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_new_recovery_codes_replace_the_old(app: Quart, user: User) -> None:
    client, old, _ = await enrolled(app, user)
    response = await client.post("/api/2fa/recovery-codes")
    assert response.status_code == 200
    new = (await response.get_json())["recovery_codes"]
    assert (await second(await pending(app, user), old[0])).status_code == 401
    assert (await second(await pending(app, user), new[0])).status_code == 200


async def test_the_pending_session_reaches_nothing_signed_in(
    app: Quart, user: User, secret: str
) -> None:
    """Sweep every route with the pending cookie: none answers as the user, and the
    session stays anonymous."""
    client = await pending(app, user)
    skip = ("second-factor", "verify", "openapi")  # the finishing step; examples name Ada
    for method, path in every_request(app, skip):
        response = await client.open(path, method=method, json={})
        body = await response.get_data(as_text=True)
        assert user.email not in body, (method, path)
        if path.startswith("/api/") and path not in ("/api/login", "/api/register"):
            assert response.status_code not in (200, 201, 204) or path in (
                "/api/logout",
                "/api/password/forgot",
                "/api/passkeys/login/options",  # open to anyone: a passkey sign-in's start
            ), (method, path, response.status_code)
    assert rows(app, "SELECT count(*) FROM sessions WHERE user_id IS NOT NULL") == [(0,)]


async def test_pages_send_a_pending_session_to_sign_in(app: Quart, user: User, secret: str) -> None:
    client = await pending(app, user)
    assert (await client.get("/api/me")).status_code == 401
    for path in ("/protected", "/account"):
        response = await client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


async def test_the_pending_session_expires_after_five_minutes(
    app: Quart, user: User, secret: str, clock: Clock
) -> None:
    client = await pending(app, user)
    clock.now += 301
    response = await second(client, totp_code(secret, clock.now))
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "second_factor_expired"


async def test_wrong_codes_are_throttled_per_account(app: Quart, user: User, secret: str) -> None:
    app.config["THROTTLE_ACCOUNT_FAILURES"] = 3
    client = await pending(app, user)
    statuses = [(await second(client, "000000")).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    limited = await second(client, totp_code(secret))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    kinds = [k for (k,) in rows(app, "SELECT kind FROM events WHERE user_id = ?", user.id)]
    assert kinds.count("second factor failed") == 3


async def test_remember_me_is_carried_over_and_the_token_rotated(
    app: Quart, user: User, secret: str
) -> None:
    client = await pending(app, user, remember=True)
    [(before,)] = rows(app, "SELECT token_hash FROM sessions")
    response = await second(client, totp_code(secret))
    assert response.status_code == 200
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("session="))
    assert "Max-Age=" in cookie or "Expires=" in cookie
    [(after,)] = rows(app, "SELECT token_hash FROM sessions")
    assert bytes(after) != bytes(before)  # a new token: the pending one is worth nothing
    assert rows(app, "SELECT remember FROM sessions WHERE user_id = ?", user.id) in (
        [(1,)],
        [(True,)],
    )


async def test_a_password_reset_never_skips_the_second_factor(
    app: Quart, user: User, secret: str, mail_server: MailServer
) -> None:
    await app.test_client().post("/api/password/forgot", json={"email": user.email})
    await mail_server.wait_for(1)
    [link] = [u for u in __import__("smtp").links(mail_server.messages[0]) if "/reset/" in u]
    token = link.rsplit("/", 1)[1]
    reset = await app.test_client().post(
        "/api/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204
    login = await app.test_client().post(
        "/api/login", json={"email": user.email, "password": NEW_PASSWORD}
    )
    assert (await login.get_json())["second_factor_required"] is True


async def test_html_sign_in_asks_for_the_code_and_carries_on(
    app: Quart, user: User, secret: str
) -> None:
    client = app.test_client()
    response = await client.post(
        "/login", form={"email": user.email, "password": PASSWORD, "next": "/account"}
    )
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login/verify")
    page = await client.get(response.headers["Location"])
    assert page.status_code == 200 and "authenticator app" in await page.get_data(as_text=True)
    wrong = await client.post("/login/verify", form={"code": "000000", "next": "/account"})
    assert wrong.status_code == 401
    done = await client.post("/login/verify", form={"code": totp_code(secret), "next": "/account"})
    assert done.status_code == 303 and done.headers["Location"] == "/account"
    assert (await client.get("/account")).status_code == 200


@pytest.mark.parametrize("action", ["begin", "disable", "recovery-codes"])
async def test_html_two_step_changes_outside_the_window_ask_for_the_password_first(
    app: Quart, user: User, secret: str, clock: Clock, action: str
) -> None:
    """A form posted once the proof ran out: nothing changes, the password is asked for, and
    the way back is the two-step page (a POST's address cannot be come back to)."""
    client = await authenticated_client(app, user)
    await client.post("/reauthenticate", form={"password": PASSWORD, "next": "/account"})
    codes = rows(app, "SELECT code_hash FROM recovery_codes WHERE user_id = ?", user.id)
    clock.now += app.config["REAUTH_WINDOW"] + 5
    response = await client.post(f"/account/two-step/{action}")
    assert response.status_code == 303
    assert response.headers["Location"] == "/reauthenticate?next=/account/two-step"
    assert rows(app, "SELECT confirmed FROM totp WHERE user_id = ?", user.id) == [(1,)]
    assert rows(app, "SELECT code_hash FROM recovery_codes WHERE user_id = ?", user.id) == codes
    again = await client.post(
        "/reauthenticate", form={"password": PASSWORD, "next": "/account/two-step"}
    )
    assert again.headers["Location"] == "/account/two-step"
    done = await client.post(f"/account/two-step/{action}")  # begin: 409, it is on already
    assert done.status_code in (200, 303, 409)
    assert "/reauthenticate" not in done.headers.get("Location", "")


async def test_html_enrolment_shows_a_qr_code_then_the_recovery_codes_once(
    app: Quart, user: User
) -> None:
    client = await authenticated_client(app, user)
    await client.post("/reauthenticate", form={"password": PASSWORD, "next": "/account/two-step"})
    assert (await client.get("/account/two-step")).status_code == 200
    setup = await client.post("/account/two-step/begin")
    html = await setup.get_data(as_text=True)
    assert 'src="data:image/svg+xml' in html
    secret = rows(app, "SELECT secret FROM totp")[0][0]
    async with app.app_context():
        from quart_auth_app.factors import _fernet

        plain = _fernet().decrypt(secret.encode()).decode()
    assert plain not in secret  # stored encrypted
    assert " ".join(plain[i : i + 4] for i in range(0, len(plain), 4)) in html
    done = await client.post("/account/two-step/confirm", form={"code": totp_code(plain)})
    assert done.status_code == 200
    shown = await done.get_data(as_text=True)
    assert shown.count("<code>") == 10
    account = await client.get("/account")
    assert "10 recovery codes left" in await account.get_data(as_text=True)


async def test_a_changed_secret_key_refuses_codes_without_an_error_and_recovery_still_works(
    app: Quart, user: User
) -> None:
    """TOTP secrets are encrypted under SECRET_KEY: after it changes, app codes are refused
    (a 401, never a 500) and the recovery codes still sign in."""
    _, codes, secret = await enrolled(app, user)
    app.config["SECRET_KEY"] = "another secret"
    response = await second(await pending(app, user), totp_code(secret, time.time() + 30))
    assert response.status_code == 401
    assert (await second(await pending(app, user), codes[0])).status_code == 200
