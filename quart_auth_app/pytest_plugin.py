"""The pytest plugin of quart_auth_app's test kit, loaded by pytest through the `pytest11`
entry point whenever the package is installed (`-p no:quart_auth_app` turns it off).

Fixtures: `auth_app` (a started app on a fresh SQLite file), `auth_client`, `signed_in`,
`outbox`, `clock` and `totp_code`. An app built on this one overrides `auth_app_factory`
(its own `create_app`) and `auth_app_config` (configuration on top of the kit's).
Each test gets its own app and database; the schema is migrated once per run and copied.

The fixtures need pytest-asyncio (strict or auto mode). Without it pytest still runs, with
no kit and a line in its header saying why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from quart import Quart
    from quart.testing import QuartClient

    from .store import User
    from .testing import Clock, Outbox

HAS_ASYNCIO = importlib.util.find_spec("pytest_asyncio") is not None
DATABASE = "auth.sqlite3"


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say why the kit's fixtures are missing, rather than leave "fixture not found"."""
    if HAS_ASYNCIO:
        return None
    return "quart_auth_app: the test kit's fixtures need pytest-asyncio (pip install it)"


def kit_config(folder: Path) -> dict[str, Any]:
    """The kit's configuration: a database and an outbox in `folder`, fast hashing."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test secret",
        "BCRYPT_ROUNDS": 4,  # bcrypt's lowest cost: a test's sign-in takes a millisecond
        "BCRYPT_THREADS": 1,
        "DATABASE": str(folder / DATABASE),
        "DATABASE_URL": None,  # never a QUART_DATABASE_URL from the environment
        "MAIL_URL": None,  # the file transport, which the outbox reads
        "MAIL_OUTBOX_DIR": str(folder / "outbox"),
        "THROTTLE_IN_FLIGHT_WAIT": 0,  # a full throttle answers 429 at once, no wait
    }


async def _migrate(path: Path) -> None:
    from .store import open_store

    store = open_store({"DATABASE": str(path), "DATABASE_URL": None})
    await store.open()
    await store.close()


if HAS_ASYNCIO:
    import pytest_asyncio

    @pytest.fixture(scope="session")
    def auth_database_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
        """An empty, migrated SQLite file, made once per run and copied for each test."""
        path = tmp_path_factory.mktemp("auth_template") / DATABASE
        # On a thread of its own: the test loop (if any) is not this fixture's to use.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _migrate(path)).result()
        return path

    @pytest.fixture
    def auth_app_factory() -> Callable[[Mapping[str, Any]], Quart]:
        """The app factory: quart_auth_app's `create_app`; override it with your own."""
        from . import create_app

        return create_app

    @pytest.fixture
    def auth_app_config() -> dict[str, Any]:
        """Configuration on top of the kit's (`kit_config`); override it to change keys."""
        return {}

    @pytest_asyncio.fixture
    async def auth_app(
        auth_app_factory: Callable[[Mapping[str, Any]], Quart],
        auth_app_config: dict[str, Any],
        auth_database_template: Path,
        tmp_path: Path,
    ) -> AsyncIterator[Quart]:
        """A started app (`test_app()` entered, and left after the test) on its own database."""
        config = {**kit_config(tmp_path), **auth_app_config}
        if not config.get("DATABASE_URL") and config["DATABASE"] == str(tmp_path / DATABASE):
            shutil.copyfile(auth_database_template, tmp_path / DATABASE)
        app = auth_app_factory(config)
        async with app.test_app():
            yield app

    @pytest.fixture
    def auth_client(auth_app: Quart) -> QuartClient:
        """A test client of `auth_app`, signed out."""
        from typing import cast

        return cast("QuartClient", auth_app.test_client())

    @pytest.fixture
    def signed_in(auth_app: Quart) -> Callable[..., Awaitable[tuple[QuartClient, User]]]:
        """`await signed_in(email, remember=, totp=, password=, verified=)`: a client signed
        in through a real stored session, and its user (created unless it exists)."""
        from .testing import authenticated_client, create_user, enable_totp, started_store

        async def sign_in(
            email: str = "ada@example.com",
            *,
            remember: bool = False,
            totp: bool = False,
            password: str | None = None,
            verified: bool = False,
        ) -> tuple[QuartClient, User]:
            store = started_store(auth_app, "signed_in")
            user = await store.select_user_by_email(email.lower())
            if user is None:
                user = await create_user(auth_app, email, password=password, verified=verified)
            if totp:
                await enable_totp(auth_app, user)
            return await authenticated_client(auth_app, user, remember), user

        return sign_in

    @pytest.fixture
    def outbox(auth_app: Quart) -> Outbox:
        """The messages `auth_app` sent in this test; `await outbox.wait_for(n)` for n."""
        from .testing import Outbox

        return Outbox(auth_app)

    @pytest.fixture
    def clock(auth_app: Quart) -> Clock:
        """`auth_app`'s now: `clock.advance(seconds)` expires sessions, links and throttles."""
        from .testing import Clock

        found = Clock()
        auth_app.extensions["auth_clock"] = found
        return found

    @pytest.fixture
    def totp_code(auth_app: Quart) -> Callable[[User], Awaitable[str]]:
        """`await totp_code(user)`: the code `user`'s authenticator shows at the app's now."""
        from .clock import now
        from .testing import totp_code as code_at
        from .testing import totp_secret

        async def code(user: User) -> str:
            return code_at(await totp_secret(auth_app, user), now(auth_app))

        return code
