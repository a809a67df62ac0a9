"""The JSON API of SPEC §4: statuses, the one error shape, content types, OpenAPI."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient
from quart_schema import OpenAPIProvider

from quart_auth_app import create_app
from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client, create_user

NEW_PASSWORD = "plum tractor velvet orbit"


def session_cookie(response: Any) -> str | None:
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith("session="):
            return str(header)
    return None


async def error_body(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the one error shape of SPEC §4 and return it."""
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = await response.get_json()
    assert set(body) <= {"error", "message", "fields"}
    assert isinstance(body["error"], str) and isinstance(body["message"], str)
    assert body["message"]
    if code is not None:
        assert body["error"] == code
    return dict(body)


# POST /api/register


async def test_register_201_signs_in(app: Quart, client: QuartClient) -> None:
    response = await client.post(
        "/api/register", json={"email": "Grace@Example.com", "password": NEW_PASSWORD}
    )
    assert response.status_code == 201
    body = await response.get_json()
    assert body == {
        "id": body["id"],
        "email": "grace@example.com",
        "name": "grace",
        "email_verified": False,
    }
    assert session_cookie(response) is not None
    assert rows(app, "SELECT user_id FROM sessions") == [(body["id"],)]
    me = await client.get("/api/me")
    assert me.status_code == 200
    assert await me.get_json() == body


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"email": "", "password": NEW_PASSWORD}, {"email"}),
        ({"email": "nope", "password": NEW_PASSWORD}, {"email"}),
        ({"email": "ok@example.com", "password": "short"}, {"password"}),
        ({"email": "ok@example.com", "password": "qwertyuiop"}, {"password"}),
        ({"email": "ok@example.com", "password": "x" * 1025}, {"password"}),
        ({"email": "ok@example.com", "password": NEW_PASSWORD, "name": "n" * 101}, {"name"}),
        ({"email": "ok@example.com", "password": NEW_PASSWORD, "name": "\u0000"}, {"name"}),
        ({"email": "x", "password": "y"}, {"email", "password"}),
        # schema-level: missing or mistyped fields
        ({"password": NEW_PASSWORD}, {"email"}),
        ({"email": "ok@example.com"}, {"password"}),
        ({"email": 12, "password": NEW_PASSWORD}, {"email"}),
        ({"email": "ok@example.com", "password": ["a", "b"]}, {"password"}),
    ],
)
async def test_register_invalid_is_400_with_fields(
    app: Quart, client: QuartClient, payload: dict[str, Any], fields: set[str]
) -> None:
    response = await client.post("/api/register", json=payload)
    body = await error_body(response, 400, "invalid_input")
    assert set(body["fields"]) == fields
    assert all(isinstance(m, str) and m for m in body["fields"].values())
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]
    assert session_cookie(response) is None


async def test_register_taken_is_409(app: Quart, client: QuartClient, user: User) -> None:
    response = await client.post(
        "/api/register", json={"email": "ADA@example.com", "password": NEW_PASSWORD}
    )
    body = await error_body(response, 409, "email_taken")
    assert "email" in body["fields"]
    assert rows(app, "SELECT count(*) FROM users") == [(1,)]


# POST /api/login


async def test_login_200_sets_cookie(app: Quart, client: QuartClient, user: User) -> None:
    response = await client.post("/api/login", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200
    assert await response.get_json() == {
        "id": user.id,
        "email": user.email,
        "name": "Ada",
        "email_verified": False,
    }
    cookie = session_cookie(response)
    assert cookie is not None and "HttpOnly" in cookie
    assert "Max-Age" not in cookie
    assert rows(app, "SELECT user_id, remember FROM sessions") == [(user.id, 0)]
    assert (await client.get("/api/me")).status_code == 200


async def test_login_remember(app: Quart, client: QuartClient, user: User) -> None:
    response = await client.post(
        "/api/login", json={"email": user.email, "password": PASSWORD, "remember": True}
    )
    assert response.status_code == 200
    assert f"Max-Age={app.config['REMEMBER_LIFETIME']}" in (session_cookie(response) or "")
    assert rows(app, "SELECT remember FROM sessions") == [(1,)]


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "ada@example.com", "password": "not the password"},
        {"email": "nobody@example.com", "password": PASSWORD},
    ],
)
async def test_login_401(app: Quart, client: QuartClient, user: User, payload: Any) -> None:
    response = await client.post("/api/login", json=payload)
    body = await error_body(response, 401, "invalid_credentials")
    assert body["message"] == "Invalid credentials. Please try again."
    assert session_cookie(response) is None
    assert rows(app, "SELECT count(*) FROM sessions") == [(0,)]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"password": PASSWORD}, "email"),
        ({"email": "ada@example.com"}, "password"),
        ({"email": "", "password": PASSWORD}, "email"),
        ({"email": "ada@example.com", "password": ""}, "password"),
        ({"email": "ada@example.com", "password": None}, "password"),
        ({"email": "ada@example.com", "password": PASSWORD, "remember": "maybe"}, "remember"),
    ],
)
async def test_login_bad_fields_is_400(
    client: QuartClient, user: User, payload: dict[str, Any], field: str
) -> None:
    body = await error_body(await client.post("/api/login", json=payload), 400, "invalid_input")
    assert field in body["fields"]


async def test_login_throttled_is_429_with_retry_after(config: dict[str, Any]) -> None:
    app = create_app({**config, "THROTTLE_ACCOUNT_FAILURES": 2})
    async with app.test_app():
        user = await create_user(app, "ada@example.com", "Ada", PASSWORD)
        client = app.test_client()
        wrong = {"email": user.email, "password": "not the password"}
        for _ in range(2):
            await error_body(await client.post("/api/login", json=wrong), 401)
        right = {"email": user.email, "password": PASSWORD}
        response = await client.post("/api/login", json=right)
        await error_body(response, 429)
        assert 0 < int(response.headers["Retry-After"]) <= app.config["THROTTLE_WINDOW"]
        assert session_cookie(response) is None


# GET /api/me, POST /api/logout


async def test_me_anonymous_is_401(client: QuartClient) -> None:
    response = await client.get("/api/me")
    await error_body(response, 401, "unauthorized")
    assert "Location" not in response.headers


async def test_me_signed_in(auth_client: QuartClient, user: User) -> None:
    response = await auth_client.get("/api/me")
    assert response.status_code == 200
    assert await response.get_json() == {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "email_verified": False,
    }


async def test_logout_204_deletes_session(app: Quart, auth_client: QuartClient) -> None:
    assert rows(app, "SELECT count(*) FROM sessions") == [(1,)]
    response = await auth_client.post("/api/logout", json={})
    assert response.status_code == 204
    assert await response.get_data() == b""
    assert rows(app, "SELECT count(*) FROM sessions") == [(0,)]
    assert (await auth_client.get("/api/me")).status_code == 401


async def test_bodiless_logout_like_curl(app: Quart, auth_client: QuartClient) -> None:
    """`curl -X POST .../api/logout` sends no body and no Content-Type."""
    response = await auth_client.post("/api/logout")
    assert response.status_code == 204
    assert rows(app, "SELECT count(*) FROM sessions") == [(0,)]


@pytest.mark.parametrize("path", ["/api/register", "/api/login"])
async def test_bodiless_post_to_a_body_route_is_400(client: QuartClient, path: str) -> None:
    await error_body(await client.post(path), 400)


async def test_logout_anonymous_is_204(client: QuartClient) -> None:
    assert (await client.post("/api/logout", json={})).status_code == 204


# sessions and password (SPEC §4)


async def test_sessions_list_and_revoke(app: Quart, user: User) -> None:
    mine = await authenticated_client(app, user)
    other = await authenticated_client(app, user)
    response = await mine.get("/api/sessions")
    assert response.status_code == 200
    sessions = (await response.get_json())["sessions"]
    assert len(sessions) == 2
    assert sorted(s["current"] for s in sessions) == [False, True]
    assert all("token" not in key for s in sessions for key in s)
    (theirs,) = [s for s in sessions if not s["current"]]
    assert (await mine.delete(f"/api/sessions/{theirs['id']}")).status_code == 204
    assert (await other.get("/api/me")).status_code == 401
    await error_body(await mine.delete(f"/api/sessions/{theirs['id']}"), 404, "not_found")


async def test_cannot_revoke_someone_elses_session(app: Quart, user: User) -> None:
    ada = await authenticated_client(app, user)
    bob = await authenticated_client(app, "bob@example.com")
    bob_id = (await (await bob.get("/api/sessions")).get_json())["sessions"][0]["id"]
    await error_body(await ada.delete(f"/api/sessions/{bob_id}"), 404)
    assert (await bob.get("/api/me")).status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/sessions/%2F%2Fevil.example", "/api//sessions/x", "/api/me//", "/api//me"]
)
async def test_doubled_slashes_are_a_json_404_not_a_redirect(
    app: Quart, user: User, path: str
) -> None:
    # werkzeug's default merges slashes with an HTML 308 to the merged path (the fuzz found it)
    ada = await authenticated_client(app, user)
    for method in ("GET", "DELETE"):
        await error_body(await ada.open(path, method=method), 404, "not_found")


async def test_revoke_others(app: Quart, user: User) -> None:
    mine = await authenticated_client(app, user)
    others = [await authenticated_client(app, user) for _ in range(2)]
    response = await mine.post("/api/sessions/revoke-others", json={})
    assert response.status_code == 200
    assert await response.get_json() == {"revoked": 2}
    assert (await mine.get("/api/me")).status_code == 200
    for other in others:
        assert (await other.get("/api/me")).status_code == 401


async def test_password_change(app: Quart, client: QuartClient, user: User) -> None:
    await client.post("/api/login", json={"email": user.email, "password": PASSWORD})
    other = await authenticated_client(app, user)
    response = await client.post(
        "/api/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204
    assert session_cookie(response) is not None  # rotated
    assert (await client.get("/api/me")).status_code == 200
    assert (await other.get("/api/me")).status_code == 401
    fresh = app.test_client()
    old = await fresh.post("/api/login", json={"email": user.email, "password": PASSWORD})
    assert old.status_code == 401
    new = await fresh.post("/api/login", json={"email": user.email, "password": NEW_PASSWORD})
    assert new.status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"current_password": "wrong one!", "new_password": NEW_PASSWORD}, 403, "current_password"),
        ({"current_password": PASSWORD, "new_password": "password123"}, 400, "new_password"),
        ({"current_password": PASSWORD, "new_password": "short"}, 400, "new_password"),
        ({"current_password": PASSWORD}, 400, "new_password"),
    ],
)
async def test_password_change_refused(
    app: Quart, auth_client: QuartClient, payload: Any, status: int, field: str
) -> None:
    before = rows(app, "SELECT password_hash FROM users")
    body = await error_body(await auth_client.post("/api/password", json=payload), status)
    assert field in body["fields"]
    assert rows(app, "SELECT password_hash FROM users") == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions/revoke-others"),
        ("DELETE", "/api/sessions/abc"),
    ],
)
async def test_session_routes_need_sign_in(client: QuartClient, method: str, path: str) -> None:
    await error_body(await client.open(path, method=method, json={}), 401)


async def test_password_needs_sign_in(client: QuartClient) -> None:
    payload = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    await error_body(await client.post("/api/password", json=payload), 401)


# bad requests


@pytest.mark.parametrize("path", ["/api/register", "/api/login", "/api/logout", "/api/password"])
@pytest.mark.parametrize(
    ("headers", "data"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, "email=a&password=b"),
        ({"Content-Type": "text/plain"}, '{"email": "a"}'),
        ({"Content-Type": "multipart/form-data; boundary=x"}, "--x--"),
        ({"Content-Length": "18"}, "email=a&password=b"),  # a body, but no type
    ],
)
async def test_non_json_body_is_415(
    auth_client: QuartClient, path: str, headers: dict[str, str], data: str
) -> None:
    response = await auth_client.post(path, headers=headers, data=data)
    await error_body(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "data", ["{bad", "", "[1, 2]", '"text"', "null", '{"email": "a"', "\xff\xfe"]
)
async def test_malformed_json_is_400(app: Quart, client: QuartClient, data: str) -> None:
    response = await client.post(
        "/api/register", data=data.encode("latin-1"), headers={"Content-Type": "application/json"}
    )
    await error_body(response, 400)
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


async def test_body_over_limit_is_413(app: Quart, client: QuartClient) -> None:
    payload = {"email": "big@example.com", "password": "x" * app.config["MAX_CONTENT_LENGTH"]}
    await error_body(await client.post("/api/register", json=payload), 413, "too_large")
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/api/nothing-here", 404), ("GET", "/api/login", 405), ("PUT", "/api/me", 405)],
)
async def test_api_never_answers_html(
    client: QuartClient, method: str, path: str, status: int
) -> None:
    await error_body(await client.open(path, method=method, json={}), status)


async def test_responses_never_carry_secrets(client: QuartClient, user: User) -> None:
    response = await client.post("/api/login", json={"email": user.email, "password": PASSWORD})
    text = (await response.get_data()).decode()
    token = (session_cookie(response) or "").split(";")[0].split("=", 1)[1]
    assert PASSWORD not in text and user.password_hash not in text and token not in text


# OpenAPI


async def test_openapi_lists_the_api(client: QuartClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = await response.get_json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path, method in [
        ("/api/register", "post"),
        ("/api/login", "post"),
        ("/api/me", "get"),
        ("/api/logout", "post"),
        ("/api/sessions", "get"),
        ("/api/sessions/{session_id}", "delete"),
        ("/api/sessions/revoke-others", "post"),
        ("/api/password", "post"),
    ]:
        assert method in paths[path], path
    assert not [p for p in paths if not p.startswith("/api/")]
    login = paths["/api/login"]["post"]
    assert {"200", "401"} <= set(login["responses"])
    assert "requestBody" in login


async def test_openapi_document_is_built_once(
    client: QuartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[int] = []
    real = OpenAPIProvider.schema

    def counting(self: OpenAPIProvider) -> dict[str, Any]:
        builds.append(1)
        return real(self)

    monkeypatch.setattr(OpenAPIProvider, "schema", counting)
    bodies = [await (await client.get("/openapi.json")).get_json() for _ in range(3)]
    assert len(builds) == 1
    assert bodies[0] == bodies[1] == bodies[2]
