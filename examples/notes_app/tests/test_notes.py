"""The notes app, tested only with quart_auth_app's test kit."""

from __future__ import annotations

PASSWORD = "correct horse battery staple"  # noqa: S105 (a test account's)


async def test_signed_in_sees_notes(signed_in):
    client, user = await signed_in("ada@example.com")
    response = await client.get("/notes")
    assert response.status_code == 200
    assert (await response.get_json())["owner"] == user.email


async def test_signed_out_goes_to_login(auth_client):
    response = await auth_client.get("/notes")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


async def test_idle_session_expires(signed_in, clock):
    client, _ = await signed_in("ada@example.com")
    clock.advance(599)
    assert (await client.get("/notes")).status_code == 200
    clock.advance(601)  # auth_app_config: SESSION_IDLE_TIMEOUT 600
    assert (await client.get("/notes")).status_code == 302


async def test_remembered_session_outlives_idle(signed_in, clock):
    client, _ = await signed_in("ada@example.com", remember=True)
    clock.advance(3600)
    assert (await client.get("/notes")).status_code == 200


async def test_password_reset_link(signed_in, auth_client, outbox):
    await signed_in("ada@example.com", password=PASSWORD)
    await auth_client.post("/api/password/forgot", json={"email": "ada@example.com"})
    [message] = await outbox.wait_for(1)
    assert message["Subject"] == "Reset your password"
    token = message.links()[0].rsplit("/", 1)[1]
    new = "a brand new battery staple"
    response = await auth_client.post(
        "/api/password/reset", json={"token": token, "new_password": new}
    )
    assert response.status_code == 204
    response = await auth_client.post(
        "/api/login", json={"email": "ada@example.com", "password": new}
    )
    assert response.status_code == 200
    assert (await auth_client.get("/notes")).status_code == 200


async def test_reset_link_expires(signed_in, auth_client, outbox, clock, auth_app):
    await signed_in("ada@example.com")
    await auth_client.post("/api/password/forgot", json={"email": "ada@example.com"})
    [message] = await outbox.wait_for(1)
    token = message.links()[0].rsplit("/", 1)[1]
    clock.advance(auth_app.config["RESET_LINK_LIFETIME"] + 1)
    response = await auth_client.post(
        "/api/password/reset", json={"token": token, "new_password": "a brand new battery staple"}
    )
    assert response.status_code == 400


async def test_two_step_sign_in(signed_in, auth_client, totp_code):
    _, user = await signed_in("ada@example.com", password=PASSWORD, totp=True)
    response = await auth_client.post(
        "/api/login", json={"email": user.email, "password": PASSWORD}
    )
    assert (await response.get_json())["second_factor_required"] is True
    assert (await auth_client.get("/notes")).status_code == 302  # not signed in yet
    code = await totp_code(user)
    response = await auth_client.post("/api/login/second-factor", json={"code": code})
    assert response.status_code == 200
    assert (await auth_client.get("/notes")).status_code == 200
