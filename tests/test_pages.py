"""The HTML pages of SPEC §3: every route, its statuses, messages and redirects."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app import create_app
from quart_auth_app.store import User

NEW_PASSWORD = "plum tractor velvet orbit"


def session_count(app: Quart) -> int:
    return int(rows(app, "SELECT count(*) FROM sessions")[0][0])


def set_cookies(response: Any) -> list[str]:
    return list(response.headers.getlist("Set-Cookie"))


async def page(response: Any) -> str:
    return (await response.get_data()).decode()


# GET /


async def test_index_anonymous_shows_login_and_register(client: QuartClient) -> None:
    response = await client.get("/")
    body = await page(response)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert 'action="/login"' in body and 'name="password"' in body
    assert 'href="/register"' in body
    assert "Welcome," not in body


async def test_index_signed_in_is_personal_with_logout_button(auth_client: QuartClient) -> None:
    response = await auth_client.get("/")
    body = await page(response)
    assert response.status_code == 200
    assert "Welcome, Ada!" in body
    assert '<form method="post" action="/logout">' in body


# GET /login


async def test_login_form_has_labels_and_autocomplete(client: QuartClient) -> None:
    response = await client.get("/login")
    body = await page(response)
    assert response.status_code == 200
    assert '<label for="email">' in body and '<label for="password">' in body
    assert 'autocomplete="username webauthn"' in body  # passkeys offered by autofill
    assert 'autocomplete="current-password"' in body
    assert 'name="remember"' in body


async def test_login_form_carries_next(client: QuartClient) -> None:
    body = await page(await client.get("/login?next=/protected"))
    assert 'name="next" value="/protected"' in body


# POST /login


async def test_login_success_redirects_303_and_flashes(
    app: Quart, client: QuartClient, user: User
) -> None:
    response = await client.post("/login", form={"email": user.email, "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert any(c.startswith("session=") for c in set_cookies(response))
    assert rows(app, "SELECT user_id FROM sessions") == [(user.id,)]
    body = await page(await client.get("/"))
    assert "Welcome, Ada!" in body
    assert 'class="flash flash-success"' in body


async def test_login_accepts_username_field(client: QuartClient, user: User) -> None:
    """The original example's `curl -d "username=...&password=..."` signs in."""
    response = await client.post("/login", form={"username": user.email, "password": PASSWORD})
    assert response.status_code == 303
    assert (await client.get("/protected")).status_code == 200


async def test_login_email_is_case_insensitive(client: QuartClient, user: User) -> None:
    response = await client.post(
        "/login", form={"email": "  ADA@Example.COM ", "password": PASSWORD}
    )
    assert response.status_code == 303


@pytest.mark.parametrize(
    ("next_url", "location"),
    [
        ("/protected", "/protected"),
        ("/account?tab=1", "/account?tab=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
    ],
)
async def test_login_honours_only_local_next(
    client: QuartClient, user: User, next_url: str, location: str
) -> None:
    form = {"email": user.email, "password": PASSWORD, "next": next_url}
    response = await client.post("/login", form=form)
    assert response.status_code == 303
    assert response.headers["Location"] == location


async def test_login_next_from_query_string(client: QuartClient, user: User) -> None:
    response = await client.post(
        "/login?next=/protected", form={"email": user.email, "password": PASSWORD}
    )
    assert response.headers["Location"] == "/protected"


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("ada@example.com", "wrong password entirely"),
        ("ada@example.com", PASSWORD.upper()),
        ("nobody@example.com", PASSWORD),
    ],
)
async def test_login_failure_is_401_and_keeps_email(
    app: Quart, client: QuartClient, user: User, email: str, password: str
) -> None:
    response = await client.post("/login", form={"email": email, "password": password})
    body = await page(response)
    assert response.status_code == 401
    assert "Invalid credentials. Please try again." in body
    assert f'value="{email}"' in body
    assert not set_cookies(response)
    assert session_count(app) == 0
    assert (await client.get("/protected")).status_code == 302


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"password": PASSWORD}, "email", "Please enter your email address."),
        ({"email": "ada@example.com"}, "password", "Please enter your password."),
        ({"email": "ada@example.com", "password": "x" * 1025}, "password", "Use at most 1024"),
    ],
)
async def test_login_missing_or_malformed_fields_is_400(
    app: Quart, client: QuartClient, user: User, form: dict[str, str], field: str, message: str
) -> None:
    response = await client.post("/login", form=form)
    body = await page(response)
    assert response.status_code == 400
    assert f'id="{field}-error"' in body and message in body
    assert session_count(app) == 0


async def test_login_password_in_query_string_is_ignored(client: QuartClient, user: User) -> None:
    """Credentials come from the body only (SPEC §6)."""
    response = await client.post(f"/login?email={user.email}&password={PASSWORD}")
    assert response.status_code == 400


async def test_login_remember_sets_persistent_cookie(client: QuartClient, user: User) -> None:
    form = {"email": user.email, "password": PASSWORD, "remember": "1"}
    response = await client.post("/login", form=form)
    assert response.status_code == 303
    (cookie,) = [c for c in set_cookies(response) if c.startswith("session=")]
    assert "Max-Age=2592000" in cookie


# GET/POST /register


async def test_register_form(client: QuartClient) -> None:
    response = await client.get("/register")
    body = await page(response)
    assert response.status_code == 200
    assert 'autocomplete="new-password"' in body and 'autocomplete="email"' in body
    assert '<label for="name">' in body


async def test_register_success_signs_in_and_redirects(app: Quart, client: QuartClient) -> None:
    form = {"email": "Grace@Example.com", "password": NEW_PASSWORD, "name": "Grace Hopper"}
    response = await client.post("/register", form=form)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert rows(app, "SELECT email, name FROM users") == [("grace@example.com", "Grace Hopper")]
    body = await page(await client.get("/"))
    assert "Welcome, Grace Hopper!" in body and "Your account is ready." in body
    assert (await client.get("/protected")).status_code == 200


@pytest.mark.parametrize(
    "name", ["\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "Ada \U0001f469\u200d\U0001f4bb"]
)
async def test_names_keep_the_joiners_scripts_and_emoji_need(
    app: Quart, client: QuartClient, name: str
) -> None:  # ZWNJ in Persian, ZWJ in emoji: format characters a name may hold
    form = {"email": "n@example.com", "password": NEW_PASSWORD, "name": name}
    assert (await client.post("/register", form=form)).status_code == 303
    assert rows(app, "SELECT name FROM users") == [(name,)]


async def test_register_name_defaults_to_email_local_part(app: Quart, client: QuartClient) -> None:
    response = await client.post(
        "/register", form={"email": "linus@example.com", "password": NEW_PASSWORD}
    )
    assert response.status_code == 303
    assert rows(app, "SELECT name FROM users") == [("linus",)]


@pytest.mark.parametrize(
    ("form", "errors"),
    [
        ({"password": NEW_PASSWORD}, {"email": "Please enter your email address."}),
        ({"email": "not-an-email", "password": NEW_PASSWORD}, {"email": "valid email address"}),
        ({"email": "a@b@example.com", "password": NEW_PASSWORD}, {"email": "valid email address"}),
        ({"email": "x" * 250 + "@example.com", "password": NEW_PASSWORD}, {"email": "valid email"}),
        ({"email": "ok@example.com"}, {"password": "Use at least 8 characters."}),
        ({"email": "ok@example.com", "password": "short"}, {"password": "at least 8"}),
        ({"email": "ok@example.com", "password": "p" * 1025}, {"password": "at most 1024"}),
        ({"email": "ok@example.com", "password": "password123"}, {"password": "too easy to guess"}),
        (
            {"email": "ok@example.com", "password": NEW_PASSWORD, "name": "n" * 101},
            {"name": "at most 100 characters"},
        ),
        (
            {"email": "ok@example.com", "password": NEW_PASSWORD, "name": "bell\x07"},
            {"name": "without control characters"},
        ),
        (
            {"email": "ok@example.com", "password": NEW_PASSWORD, "name": "Ada\U00078257"},
            {"name": "without control characters"},
        ),
        (
            {"email": "ok@example.com", "password": NEW_PASSWORD, "name": "Ada\ue000"},
            {"name": "without control characters"},
        ),
        (
            {"email": "ok@example.com", "password": NEW_PASSWORD, "name": "Ada\u2028Lovelace"},
            {"name": "without control characters"},
        ),
        (
            {"email": "ok@example.com", "password": NEW_PASSWORD, "name": "\u202egnp.exe"},
            {"name": "without control characters"},
        ),
        (
            {"email": "bad", "password": "short"},
            {"email": "valid email address", "password": "at least 8"},
        ),
    ],
)
async def test_register_invalid_input_is_400_per_field(
    app: Quart, client: QuartClient, form: dict[str, str], errors: dict[str, str]
) -> None:
    response = await client.post("/register", form=form)
    body = await page(response)
    assert response.status_code == 400
    for field, message in errors.items():
        assert f'id="{field}-error"' in body
        assert message in body
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]
    assert session_count(app) == 0
    assert not set_cookies(response)


async def test_register_invalid_keeps_typed_email_and_name(client: QuartClient) -> None:
    form = {"email": "keep@example.com", "name": "Keeper", "password": "short"}
    body = await page(await client.post("/register", form=form))
    assert 'value="keep@example.com"' in body and 'value="Keeper"' in body
    assert 'value="short"' not in body


@pytest.mark.parametrize("email", ["ada@example.com", "ADA@example.com", " Ada@Example.Com"])
async def test_register_taken_email_is_409(
    app: Quart, client: QuartClient, user: User, email: str
) -> None:
    response = await client.post("/register", form={"email": email, "password": NEW_PASSWORD})
    body = await page(response)
    assert response.status_code == 409
    assert "An account with this email already exists." in body
    assert rows(app, "SELECT count(*) FROM users") == [(1,)]
    assert session_count(app) == 0


async def test_register_never_echoes_the_password(client: QuartClient) -> None:
    secret = "zq9-unique-Secret"
    form = {"email": "bad", "password": secret}
    body = await page(await client.post("/register", form=form))
    assert secret not in body


# GET/POST /logout


async def test_get_logout_shows_button_and_does_not_log_out(
    app: Quart, auth_client: QuartClient
) -> None:
    response = await auth_client.get("/logout")
    body = await page(response)
    assert response.status_code == 200
    assert '<form method="post" action="/logout">' in body
    assert not set_cookies(response)
    assert session_count(app) == 1
    assert (await auth_client.get("/protected")).status_code == 200


async def test_get_logout_anonymous(client: QuartClient) -> None:
    response = await client.get("/logout")
    assert response.status_code == 200
    assert "You are not signed in." in await page(response)


async def test_post_logout_deletes_session_and_redirects(
    app: Quart, auth_client: QuartClient
) -> None:
    response = await auth_client.post("/logout")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login"
    assert rows(app, "SELECT count(*) FROM sessions WHERE user_id IS NOT NULL") == [(0,)]
    body = await page(await auth_client.get("/login"))
    assert "You have been logged out." in body
    protected = await auth_client.get("/protected")
    assert protected.status_code == 302
    # The flash was the only thing stored: once shown, nothing is left behind.
    assert session_count(app) == 0


async def test_post_logout_anonymous_is_harmless(app: Quart, client: QuartClient) -> None:
    response = await client.post("/logout")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login"


# GET /protected


async def test_protected_signed_in(auth_client: QuartClient) -> None:
    response = await auth_client.get("/protected")
    assert response.status_code == 200
    assert "Welcome to the protected area, Ada" in await page(response)


async def test_protected_anonymous_redirects_to_login(client: QuartClient) -> None:
    response = await client.get("/protected")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/protected"
    assert not set_cookies(response)


async def test_protected_round_trip_through_login(client: QuartClient, user: User) -> None:
    location = (await client.get("/protected")).headers["Location"]
    form_page = await page(await client.get(location))
    assert 'name="next" value="/protected"' in form_page
    response = await client.post(
        "/login", form={"email": user.email, "password": PASSWORD, "next": "/protected"}
    )
    assert response.headers["Location"] == "/protected"
    assert (await client.get("/protected")).status_code == 200


# names are shown escaped


async def test_names_are_escaped(client: QuartClient) -> None:
    name = "<script>alert(1)</script>"
    form = {"email": "mallory@example.com", "password": NEW_PASSWORD, "name": name}
    assert (await client.post("/register", form=form)).status_code == 303
    for path in ("/", "/protected"):
        body = await page(await client.get(path))
        assert name not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


# GET /healthz, unknown pages


async def test_healthz_ok(client: QuartClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "ok"


async def test_healthz_503_when_database_cannot_open(tmp_path: Any) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    app = create_app({"TESTING": True, "SECRET_KEY": "x", "DATABASE": str(tmp_path)})
    response = await app.test_client().get("/healthz")
    assert response.status_code == 503
    assert (await response.get_json())["status"] != "ok"


async def test_unknown_page_is_html_404(client: QuartClient) -> None:
    response = await client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "There is nothing at this address." in await page(response)


async def test_form_body_over_limit_is_413(app: Quart, client: QuartClient) -> None:
    big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    response = await client.post("/login", form={"email": "a@example.com", "password": big})
    assert response.status_code == 413
    assert session_count(app) == 0


async def test_protected_redirect_keeps_the_query_string(client: QuartClient, user: User) -> None:
    location = (await client.get("/protected?x=1&y=2")).headers["Location"]
    assert location == "/login?next=/protected%3Fx%3D1%26y%3D2"
    response = await client.post(location, form={"email": user.email, "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["Location"] == "/protected?x=1&y=2"
