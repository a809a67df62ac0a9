"""The test kit (issue 15): the pytest plugin's fixtures, run as a user's suite would run them,
and the helpers' refusal to work on an app that was never started."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app import create_app
from quart_auth_app.testing import authenticated_client, create_user, login_session

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_mode = {mode}
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

# A user's suite: every fixture of the kit, in strict mode (so each test is marked).
SUITE = """
import pytest

PASSWORD = "correct horse battery staple"
pytestmark = pytest.mark.asyncio


async def test_signed_in(signed_in):
    client, user = await signed_in("Ada@Example.com")
    response = await client.get("/api/me")
    assert response.status_code == 200
    assert (await response.get_json())["email"] == user.email == "ada@example.com"


async def test_signed_out(auth_client):
    assert (await auth_client.get("/api/me")).status_code == 401


async def test_idle_timeout(signed_in, clock, auth_app):
    client, _ = await signed_in("ada@example.com")
    clock.advance(auth_app.config["SESSION_IDLE_TIMEOUT"] - 60)
    assert (await client.get("/api/me")).status_code == 200
    clock.advance(auth_app.config["SESSION_IDLE_TIMEOUT"] + 1)
    assert (await client.get("/api/me")).status_code == 401


async def test_remember_outlives_idle_not_lifetime(signed_in, clock, auth_app):
    client, _ = await signed_in("ada@example.com", remember=True)
    clock.advance(auth_app.config["SESSION_IDLE_TIMEOUT"] + 1)
    assert (await client.get("/api/me")).status_code == 200
    clock.advance(auth_app.config["REMEMBER_LIFETIME"])
    assert (await client.get("/api/me")).status_code == 401


async def test_reset_link(signed_in, auth_client, outbox):
    await signed_in("ada@example.com", password=PASSWORD)
    response = await auth_client.post("/api/password/forgot", json={"email": "ada@example.com"})
    assert response.status_code == 202
    [message] = await outbox.wait_for(1)
    assert message["To"] == "ada@example.com"
    [link] = message.links()
    assert message.paths() == ["/password/reset/" + link.rsplit("/", 1)[1]]
    token = link.rsplit("/", 1)[1]
    new = "a brand new battery staple"
    response = await auth_client.post("/api/password/reset", json={"token": token, "new_password": new})
    assert response.status_code == 204
    response = await auth_client.post("/api/login", json={"email": "ada@example.com", "password": new})
    assert response.status_code == 200


async def test_reset_link_expires(signed_in, auth_client, outbox, clock, auth_app):
    await signed_in("ada@example.com")
    await auth_client.post("/api/password/forgot", json={"email": "ada@example.com"})
    [message] = await outbox.wait_for(1)
    token = message.links()[0].rsplit("/", 1)[1]
    clock.advance(auth_app.config["RESET_LINK_LIFETIME"] + 1)
    response = await auth_client.post("/api/password/reset", json={"token": token, "new_password": "a brand new battery staple"})
    assert (await response.get_json())["error"] == "invalid_token"


async def test_throttle_window(signed_in, auth_client, clock, auth_app):
    await signed_in("ada@example.com", password=PASSWORD)
    wrong = {"email": "ada@example.com", "password": "not it at all"}
    for _ in range(auth_app.config["THROTTLE_ACCOUNT_FAILURES"]):
        assert (await auth_client.post("/api/login", json=wrong)).status_code == 401
    right = {"email": "ada@example.com", "password": PASSWORD}
    assert (await auth_client.post("/api/login", json=right)).status_code == 429
    clock.advance(auth_app.config["THROTTLE_WINDOW"] + 1)
    assert (await auth_client.post("/api/login", json=right)).status_code == 200


async def test_totp(signed_in, auth_client, totp_code, clock):
    _, user = await signed_in("ada@example.com", password=PASSWORD, totp=True)
    response = await auth_client.post("/api/login", json={"email": user.email, "password": PASSWORD})
    assert (await response.get_json())["second_factor_required"] is True
    response = await auth_client.post("/api/login/second-factor", json={"code": await totp_code(user)})
    assert response.status_code == 200
    clock.advance(30)  # a code works once: the next sign-in needs the next step's
    response = await auth_client.post("/api/login", json={"email": user.email, "password": PASSWORD})
    response = await auth_client.post("/api/login/second-factor", json={"code": await totp_code(user)})
    assert response.status_code == 200
"""


def _run(pytester: pytest.Pytester, mode: str, suite: str) -> pytest.RunResult:
    pytester.makeini(INI.format(mode=mode))
    pytester.makepyfile(test_suite=suite)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider")


def test_every_fixture_in_strict_mode(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "strict", SUITE)
    result.assert_outcomes(passed=SUITE.count("\nasync def test_"))


def test_auto_mode(pytester: pytest.Pytester) -> None:
    suite = SUITE.replace("pytestmark = pytest.mark.asyncio\n", "")
    result = _run(pytester, "auto", suite)
    result.assert_outcomes(passed=SUITE.count("\nasync def test_"))


def test_an_app_of_its_own(pytester: pytest.Pytester) -> None:
    """An app built on this one: its factory and configuration through two fixtures."""
    pytester.makeconftest(
        """
        import pytest
        from quart_auth_app import create_app
        from quart_auth_app.auth import login_required

        def make_app(config):
            app = create_app(config)

            @app.get("/notes")
            @login_required
            async def notes():
                return {"notes": []}

            return app

        @pytest.fixture
        def auth_app_factory():
            return make_app

        @pytest.fixture
        def auth_app_config():
            return {"SESSION_IDLE_TIMEOUT": 60}
        """
    )
    suite = """
        async def test_notes(signed_in, auth_client, clock):
            client, _ = await signed_in("ada@example.com")
            assert (await client.get("/notes")).status_code == 200
            assert (await auth_client.get("/notes")).status_code == 302  # to the login page
            clock.advance(61)
            assert (await client.get("/notes")).status_code == 302
    """
    result = _run(pytester, "auto", textwrap.dedent(suite))
    result.assert_outcomes(passed=1)


def test_naive_fixture_fails_fast(pytester: pytest.Pytester) -> None:
    """The README's old pattern (no test_app()) used to pass and then hang the run for good."""
    pytester.makeini(INI.format(mode="auto"))
    pytester.makepyfile(
        test_naive="""
        import pytest
        from quart_auth_app import create_app
        from quart_auth_app.testing import authenticated_client

        @pytest.fixture
        def app(tmp_path):
            return create_app({"SECRET_KEY": "x", "DATABASE": str(tmp_path / "db.sqlite3")})

        async def test_protected(app):
            client = await authenticated_client(app, "ada@example.com")
            assert (await client.get("/api/me")).status_code == 200
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*RuntimeError: the app is not started*async with app.test_app()*"]
    )


@pytest.mark.parametrize("helper", ["create_user", "login_session", "authenticated_client"])
async def test_helpers_refuse_an_app_not_started(config: dict[str, Any], helper: str) -> None:
    app = create_app(config)
    calls: dict[str, Any] = {
        "create_user": lambda: create_user(app, "ada@example.com"),
        "login_session": lambda: login_session(app, None),  # type: ignore[arg-type]
        "authenticated_client": lambda: authenticated_client(app, "ada@example.com"),
    }
    with pytest.raises(RuntimeError, match=r"call .*\(\) inside `async with app.test_app\(\):`"):
        await calls[helper]()


def test_this_repository_keeps_its_own_fixtures(
    app: Quart, client: QuartClient, auth_client: QuartClient
) -> None:
    """The plugin loads here too; the conftest's `auth_client` (signed in) wins over the kit's."""
    assert "quart_auth_app.pytest_plugin" in sys.modules
    assert auth_client.cookie_jar is not None
    assert any(
        cookie.name == app.config["SESSION_COOKIE_NAME"] for cookie in auth_client.cookie_jar
    )
