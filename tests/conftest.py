"""Shared fixtures: a fresh app and database per test, low bcrypt cost, signed-in clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app import create_app
from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client, create_user

PASSWORD = "correct horse battery staple"
REQUIRE_ALL = os.environ.get("QUART_AUTH_REQUIRE_ALL") == "1"


@pytest.fixture
def db_config(tmp_path: Any) -> dict[str, Any]:
    """Where the test's database lives: a fresh SQLite file."""
    return {"DATABASE": str(tmp_path / "app.sqlite3")}


@pytest.fixture
def config(db_config: dict[str, Any]) -> dict[str, Any]:
    """The test app's configuration; tests override keys by overriding this fixture."""
    return {"TESTING": True, "SECRET_KEY": "test secret", "BCRYPT_ROUNDS": 4, **db_config}


@pytest.fixture
async def app(config: dict[str, Any]) -> AsyncIterator[Quart]:
    app = create_app(config)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> QuartClient:
    return app.test_client()


@pytest.fixture
async def user(app: Quart) -> User:
    """Ada, with the password PASSWORD."""
    return await create_user(app, "ada@example.com", "Ada", PASSWORD)


@pytest.fixture
async def auth_client(app: Quart, user: User) -> QuartClient:
    """A client signed in as Ada through a real stored session (no bcrypt, no form)."""
    return await authenticated_client(app, user)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI nothing may be skipped: a skipped browser or PostgreSQL test fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if REQUIRE_ALL and skipped:
        reporter.write_line(
            f"QUART_AUTH_REQUIRE_ALL=1 and {skipped} test(s) skipped: failing.", red=True
        )
        session.exitstatus = 1
