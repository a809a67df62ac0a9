"""Shared fixtures: a fresh app and database per test, low bcrypt cost, signed-in clients."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import pgcluster
import pytest
from quart import Quart
from quart.testing import QuartClient
from smtp import certificate, mail_server  # noqa: F401 (fixtures for every test module)

from quart_auth_app import create_app
from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client, create_user

T = TypeVar("T")
PASSWORD = "correct horse battery staple"
REQUIRE_ALL = os.environ.get("QUART_AUTH_REQUIRE_ALL") == "1"


PG_DSN = os.environ.get("QUART_AUTH_TEST_PG_DSN")  # a superuser DSN (scripts/with-postgres)
ENGINES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def _in_thread(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on its own loop in a thread, away from the test's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test's database is copied from."""
    if not PG_DSN:
        pytest.skip("QUART_AUTH_TEST_PG_DSN is not set (run through scripts/with-postgres)")
    name = _in_thread(pgcluster.create_template(PG_DSN))
    yield name
    _in_thread(pgcluster.drop_database(PG_DSN, name))


@pytest.fixture
async def pg_url(pg_template: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database with the schema, dropped after the test."""
    assert PG_DSN is not None
    name = await pgcluster.create_database(PG_DSN, template=pg_template)
    yield pgcluster.database_url(PG_DSN, name)
    await pgcluster.drop_database(PG_DSN, name)


@pytest.fixture(params=ENGINES)
def db_config(request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, Any]:
    """Where the test's database lives: a fresh SQLite file, or a fresh PostgreSQL database."""
    config: dict[str, Any] = {
        "DATABASE": str(tmp_path / "app.sqlite3"),
        "MAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
    }
    if request.param == "postgresql":
        config["DATABASE_URL"] = request.getfixturevalue("pg_url")
    return config


@pytest.fixture
def config(db_config: dict[str, Any]) -> dict[str, Any]:
    """The test app's configuration; tests override keys by overriding this fixture."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test secret",
        "BCRYPT_ROUNDS": 4,
        # A 429 at once, as before the in-flight wait (tests/test_throttle.py tests the wait).
        "THROTTLE_IN_FLIGHT_WAIT": 0,
        **db_config,
    }


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
