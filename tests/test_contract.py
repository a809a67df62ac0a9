"""The API as others see it: HTTP methods as RFC 9110 says, and an OpenAPI document whose
every promise the server keeps (the constraints, the refusals, the cookie)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from conftest import PASSWORD
from openapi_spec_validator import validate
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE"]
SAMPLE = {"session_id": "x", "filename": "style.css", "token": "t", "passkey_id": "x"}


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "THROTTLE_ENABLED": False}


def _paths(app: Quart) -> dict[str, set[str]]:
    """Each routed address (parameters filled in) and every method some rule takes there."""
    paths: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", SAMPLE[name])
            path = path.replace(f"<path:{name}>", SAMPLE[name])
            path = path.replace(f"<{name}:{name}>", SAMPLE[name])
        paths.setdefault(path, set()).update(rule.methods or ())
    return paths


def _allow(response: Any) -> set[str]:
    return {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}


async def _document(client: QuartClient) -> dict[str, Any]:
    return await (await client.get("/openapi.json")).get_json()  # type: ignore[no-any-return]


async def test_every_405_lists_the_allowed_methods(app: Quart, client: QuartClient) -> None:
    paths = _paths(app)
    assert len(paths) >= 20
    for path, allowed in paths.items():
        for method in [m for m in METHODS if m not in allowed]:
            response = await client.open(path, method=method)
            assert response.status_code == 405, (method, path)
            assert _allow(response) == allowed, (method, path)
            if path.startswith("/api/") or path == "/openapi.json":
                assert (await response.get_json())["error"] == "method_not_allowed"
            else:
                assert response.mimetype == "text/html", (method, path)


async def test_options_answers_allow_everywhere(app: Quart, auth_client: QuartClient) -> None:
    for path, allowed in _paths(app).items():
        response = await auth_client.options(path, headers={"Origin": "https://evil.example"})
        assert response.status_code == 200, path
        assert _allow(response) == allowed, path
        assert {"OPTIONS", "HEAD"} <= allowed or "GET" not in allowed


async def test_head_answers_wherever_get_does(app: Quart, auth_client: QuartClient) -> None:
    for path, allowed in _paths(app).items():
        if "GET" not in allowed:
            continue
        get = await auth_client.get(path)
        head = await auth_client.head(path)
        assert head.status_code == get.status_code, path
        assert head.mimetype == get.mimetype, path  # Hypercorn (h11) sends HEAD no body


async def test_a_route_answers_only_its_declared_methods(auth_client: QuartClient) -> None:
    # /api/sessions/<session_id> once took DELETE /api/sessions/revoke-others for a session id
    response = await auth_client.delete("/api/sessions/revoke-others")
    assert response.status_code == 405
    assert _allow(response) == {"POST", "OPTIONS"}


async def test_the_document_is_valid_openapi_3_1(client: QuartClient) -> None:
    document = await _document(client)
    assert document["openapi"].startswith("3.1")
    validate(document)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


async def test_every_operation_declares_its_refusals(client: QuartClient) -> None:
    document = await _document(client)
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"] and error["additionalProperties"] is False
    for method, path, operation in _operations(document):
        statuses = {int(s) for s in operation["responses"]}
        expected = {400, 503} | ({403, 413} if method != "GET" else set())
        expected |= {415} if method == "POST" else set()
        assert expected <= statuses, (method, path, statuses)
        assert any(s < 300 for s in statuses), (method, path)
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}
            assert content["examples"] and response["description"]
            if int(status) == 429:
                assert response["headers"]["Retry-After"]["required"] is True


SIGNED_IN = {
    ("GET", "/api/me"),
    ("GET", "/api/sessions"),
    ("DELETE", "/api/sessions/{session_id}"),
    ("POST", "/api/sessions/revoke-others"),
    ("POST", "/api/password"),
    ("POST", "/api/email/verify/resend"),
    ("POST", "/api/email"),
    ("DELETE", "/api/me"),
    ("GET", "/api/me/export"),
    ("POST", "/api/reauthenticate"),
    ("POST", "/api/2fa/totp"),
    ("POST", "/api/2fa/totp/confirm"),
    ("DELETE", "/api/2fa/totp"),
    ("POST", "/api/2fa/recovery-codes"),
    ("POST", "/api/passkeys/register/options"),
    ("POST", "/api/passkeys"),
    ("GET", "/api/passkeys"),
    ("DELETE", "/api/passkeys/{passkey_id}"),
}


async def test_the_cookie_is_the_security_scheme(app: Quart, client: QuartClient) -> None:
    document = await _document(client)
    assert document["components"]["securitySchemes"]["cookieAuth"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": app.config["SESSION_COOKIE_NAME"],
        "description": document["components"]["securitySchemes"]["cookieAuth"]["description"],
    }
    for method, path, operation in _operations(document):
        security = operation.get("security", [])
        if (method, path) in SIGNED_IN:
            assert security == [{"cookieAuth": []}], (method, path)
            assert "401" in operation["responses"]
            body = _example(operation)
            anonymous = await client.open(
                path.replace("{session_id}", "x").replace("{passkey_id}", "x"),
                method=method,
                json=body,
            )
            assert anonymous.status_code == 401, (method, path)
        else:
            assert {"cookieAuth": []} not in security or {} in security, (method, path)


def _example(operation: dict[str, Any]) -> dict[str, Any] | None:
    if "requestBody" not in operation:
        return None
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    return dict(schema["examples"][0])


async def test_sign_in_documents_and_sets_the_cookie(
    app: Quart, client: QuartClient, user: User
) -> None:
    document = await _document(client)
    assert "Set-Cookie" in document["paths"]["/api/login"]["post"]["responses"]["200"]["headers"]
    response = await client.post("/api/login", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200
    name = app.config["SESSION_COOKIE_NAME"]
    assert any(c.startswith(f"{name}=") for c in response.headers.getlist("Set-Cookie"))


def _body_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    operation = document["paths"][path]["post"]
    return operation["requestBody"]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def _email(length: int) -> str:
    """A valid address of exactly `length` characters (local part 64, labels of at most 63)."""
    local = "a" * 64
    domain = "example.com"
    labels: list[str] = []
    while len(local) + 1 + len(".".join([*labels, domain])) < length:
        room = length - len(local) - 1 - len(".".join([*labels, domain])) - 1
        labels.append("b" * min(63, room))
    address = f"{local}@{'.'.join([*labels, domain])}"
    assert len(address) == length, len(address)
    return address


def _strong(length: int) -> str:
    return secrets.token_urlsafe(length)[:length]


def _bound(schema: dict[str, Any], key: str) -> int:
    value = schema.get(key)
    if value is None:  # a nullable field: the bounds sit on its string branch
        value = next(branch[key] for branch in schema["anyOf"] if branch.get("type") == "string")
    return int(value)


async def _status(client: QuartClient, path: str, body: dict[str, Any]) -> tuple[int, dict]:
    response = await client.post(path, json=body)
    payload = await response.get_json() if response.status_code != 204 else {}
    return response.status_code, (payload or {}).get("fields", {})


async def test_register_bounds_are_the_servers(app: Quart, client: QuartClient) -> None:
    schema = _body_schema(await _document(client), "/api/register")
    fields = schema["properties"]
    email_max, name_max = _bound(fields["email"], "maxLength"), _bound(fields["name"], "maxLength")
    password_min = _bound(fields["password"], "minLength")
    password_max = _bound(fields["password"], "maxLength")
    assert (email_max, name_max) == (254, 100)
    assert (password_min, password_max) == (
        app.config["PASSWORD_MIN_LENGTH"],
        app.config["PASSWORD_MAX_LENGTH"],
    )
    assert fields["email"]["format"] == "idn-email" and schema["required"] == ["email", "password"]

    def body(**values: str) -> dict[str, Any]:
        return {"email": f"{secrets.token_hex(4)}@example.com", "password": _strong(40), **values}

    for field, at_limit, past_limit in [
        ("email", _email(email_max), _email(email_max + 1)),
        ("name", "n" * name_max, "n" * (name_max + 1)),
        ("password", _strong(password_max), _strong(password_max + 1)),
        ("password", _strong(password_min), _strong(password_min - 1)),
    ]:
        status, wrong = await _status(client, "/api/register", body(**{field: at_limit}))
        assert status == 201 and field not in wrong, (field, len(at_limit), wrong)
        client.cookie_jar.clear()
        status, wrong = await _status(client, "/api/register", body(**{field: past_limit}))
        assert status == 400 and field in wrong, (field, len(past_limit), wrong)
    assert (await _status(client, "/api/register", body(email="")))[0] == 400  # minLength 1
    assert (await _status(client, "/api/register", body(name="a\x07b")))[0] == 400  # pattern


async def test_sign_in_bounds_are_the_servers(client: QuartClient, user: User) -> None:
    fields = _body_schema(await _document(client), "/api/login")["properties"]
    email_max = _bound(fields["email"], "maxLength")
    password_max = _bound(fields["password"], "maxLength")
    assert _bound(fields["password"], "minLength") == _bound(fields["email"], "minLength") == 1
    credentials = {"email": user.email, "password": PASSWORD}
    for field, at_limit, past_limit in [
        ("email", _email(email_max), _email(email_max + 1)),
        ("password", "p" * password_max, "p" * (password_max + 1)),
        ("email", "a", ""),
        ("password", "p", ""),
    ]:
        status, wrong = await _status(client, "/api/login", {**credentials, field: at_limit})
        assert status == 401 and not wrong, (field, len(at_limit))  # refused as credentials
        status, wrong = await _status(client, "/api/login", {**credentials, field: past_limit})
        assert status == 400 and field in wrong, (field, len(past_limit))


@pytest.mark.parametrize(
    ("value", "status"),
    [(True, 200), (0, 200), ("YES", 200), ("off", 200), ("maybe", 400), (2, 400), (None, 400)],
)
async def test_remember_takes_what_the_document_says(
    client: QuartClient, user: User, value: Any, status: int
) -> None:
    body = {"email": user.email, "password": PASSWORD, "remember": value}
    assert (await client.post("/api/login", json=body)).status_code == status


async def test_password_change_bounds_are_the_servers(app: Quart, user: User) -> None:
    client = await authenticated_client(app, user)
    fields = _body_schema(await _document(client), "/api/password")["properties"]
    new_min = _bound(fields["new_password"], "minLength")
    new_max = _bound(fields["new_password"], "maxLength")
    current_max = _bound(fields["current_password"], "maxLength")
    for past_limit in (_strong(new_min - 1), _strong(new_max + 1)):
        body = {"current_password": PASSWORD, "new_password": past_limit}
        status, wrong = await _status(client, "/api/password", body)
        assert status == 400 and "new_password" in wrong, len(past_limit)
    # Out of bounds, a current password is malformed input (400), not a counted guess.
    for current in ("", "p" * (current_max + 1)):
        body = {"current_password": current, "new_password": _strong(40)}
        status, wrong = await _status(client, "/api/password", body)
        assert status == 400 and "current_password" in wrong, len(current)
    body = {"current_password": PASSWORD, "new_password": _strong(new_max)}
    assert (await _status(client, "/api/password", body))[0] == 204


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=1", 200),
        ("limit=100&offset=100000", 200),
        ("limit=0", 400),
        ("limit=101", 400),
        ("offset=-1", 400),
        ("offset=100001", 400),
    ],
)
async def test_page_bounds_are_the_servers(
    auth_client: QuartClient, query: str, status: int
) -> None:
    document = await _document(auth_client)
    parameters = {
        p["name"]: p["schema"] for p in document["paths"]["/api/sessions"]["get"]["parameters"]
    }
    assert (parameters["limit"]["minimum"], parameters["limit"]["maximum"]) == (1, 100)
    assert (parameters["offset"]["minimum"], parameters["offset"]["maximum"]) == (0, 100_000)
    assert (await auth_client.get(f"/api/sessions?{query}")).status_code == status
