"""A sign-up may be sent again (issue #16): one committed whose answer was lost signs its
owner in; any other password for a taken email is still 409 and counted like a sign-in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app.store import User
from quart_auth_app.testing import enable_totp

WRONG = "plum tractor velvet orbit"
SECOND_FACTOR = {"second_factor_required": True, "methods": ["totp", "recovery_code"]}


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "THROTTLE_ACCOUNT_FAILURES": 3}


async def api_register(client: QuartClient, password: str = PASSWORD, **extra: Any) -> Any:
    return await client.post(
        "/api/register", json={"email": "ada@example.com", "password": password, **extra}
    )


def user_count(app: Quart) -> int:
    return int(rows(app, "SELECT count(*) FROM users")[0][0])


def events(app: Quart, user_id: int) -> list[str]:
    return [
        k for (k,) in rows(app, "SELECT kind FROM events WHERE user_id = ? ORDER BY id", user_id)
    ]


async def test_a_retried_api_sign_up_signs_in_as_the_login_api_does(app: Quart) -> None:
    first = await api_register(app.test_client())  # committed; pretend its answer was lost
    assert first.status_code == 201
    retry = app.test_client()
    again = await api_register(retry)
    assert again.status_code == 200
    login = await app.test_client().post(
        "/api/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert await again.get_json() == await login.get_json() == await first.get_json()
    assert any(c.startswith("session=") for c in again.headers.getlist("Set-Cookie"))
    me = await retry.get("/api/me")
    assert me.status_code == 200 and (await me.get_json())["email"] == "ada@example.com"
    assert user_count(app) == 1
    assert len(rows(app, "SELECT id FROM mail_outbox")) == 1  # one verification mail, not two
    assert events(app, (await first.get_json())["id"]).count("sign-in") == 3


async def test_a_retried_form_sign_up_redirects_signed_in(app: Quart) -> None:
    form = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}
    assert (await app.test_client().post("/register", form=form)).status_code == 303
    browser = app.test_client()
    again = await browser.post("/register", form=form)
    assert (again.status_code, again.headers["Location"]) == (303, "/")
    home = await (await browser.get("/")).get_data(as_text=True)
    assert "Welcome, Ada! You are signed in." in home
    assert user_count(app) == 1


@pytest.mark.parametrize("path", ["/api/register", "/register"])
async def test_a_wrong_password_is_still_409_with_no_session(
    app: Quart, user: User, path: str
) -> None:
    client = app.test_client()
    body = {"email": "ADA@example.com", "password": WRONG}
    response = await (
        client.post(path, json=body) if path.startswith("/api") else client.post(path, form=body)
    )
    assert response.status_code == 409
    if path.startswith("/api"):
        assert (await response.get_json())["error"] == "email_taken"
    assert rows(app, "SELECT count(*) FROM sessions") == [(0,)]
    assert events(app, user.id) == ["sign-in failed"]  # counted as the login path counts


@pytest.mark.parametrize("then", ["register", "login"])
async def test_wrong_passwords_through_sign_up_are_throttled_like_sign_ins(
    app: Quart, user: User, then: str
) -> None:
    statuses = [(await api_register(app.test_client(), WRONG)).status_code for _ in range(3)]
    assert statuses == [409, 409, 409]
    client = app.test_client()
    if then == "register":  # even the right password: the account is throttled
        limited = await api_register(client)
    else:
        limited = await client.post("/api/login", json={"email": user.email, "password": PASSWORD})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert rows(app, "SELECT count(*) FROM sessions") == [(0,)]


async def test_a_right_password_forgives_the_failures_as_a_sign_in_does(
    app: Quart, user: User
) -> None:
    for _ in range(2):
        assert (await api_register(app.test_client(), WRONG)).status_code == 409
    assert (await api_register(app.test_client())).status_code == 200
    for _ in range(2):  # two more failures: not yet over the limit of 3
        assert (await api_register(app.test_client(), WRONG)).status_code == 409
    assert (await api_register(app.test_client())).status_code == 200


async def test_an_account_with_a_second_factor_gets_the_pending_session_only(
    app: Quart, user: User
) -> None:
    await enable_totp(app, user)
    client = app.test_client()
    response = await api_register(client)
    assert response.status_code == 200
    assert await response.get_json() == SECOND_FACTOR
    assert (await client.get("/api/me")).status_code == 401
    page = await app.test_client().post(
        "/register", form={"email": user.email, "password": PASSWORD}
    )
    assert (page.status_code, page.headers["Location"]) == (303, "/login/verify")


async def test_sign_ups_racing_for_one_email_make_one_account_and_all_sign_in(
    app: Quart,
) -> None:
    # Three: the losers' password checks are counted in flight, as concurrent sign-ins are,
    # and the account's limit here is 3 (with THROTTLE_IN_FLIGHT_WAIT 0, a 4th is a 429).
    clients = [app.test_client() for _ in range(3)]
    responses = await asyncio.gather(*(api_register(c) for c in clients))
    assert sorted(r.status_code for r in responses) == [200, 200, 201]
    assert user_count(app) == 1
    assert [(await c.get("/api/me")).status_code for c in clients] == [200] * 3


async def test_enumeration_no_worse_a_taken_email_answers_409_whatever_the_wrong_password(
    app: Quart, user: User
) -> None:
    """Without the password, a taken email reads as it always did: 409 email_taken. Only the
    account's own password (which signs in at /login anyway) answers otherwise."""
    answers = set()
    for password in (WRONG, "another passphrase 77", "yet one more phrase 3"):
        response = await app.test_client().post(
            "/api/register", json={"email": user.email, "password": password}
        )
        answers.add((response.status_code, (await response.get_json())["error"]))
    assert answers == {(409, "email_taken")}
