"""Admin commands (SPEC §2): init-db, create-user, purge-sessions.

The commands run their own event loop, so these tests are synchronous.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import PASSWORD
from dbrows import rows
from quart import Quart

from quart_auth_app import create_app
from quart_auth_app.passwords import Hasher
from quart_auth_app.store.migrations import split_migrations

ROOT = Path(__file__).resolve().parent.parent
LATEST = max(n for n, _ in split_migrations((ROOT / "quart_auth_app/sql/sqlite.sql").read_text()))


@pytest.fixture
def cli_app(config: dict[str, Any]) -> Quart:
    return create_app(config)


def invoke(app: Quart, *args: str, input: str | None = None) -> Result:
    runner: CliRunner = app.test_cli_runner()
    return runner.invoke(args=list(args), input=input)


def password_matches(password: str, password_hash: str) -> bool:
    hasher = Hasher(4, 1)
    try:
        return asyncio.run(hasher.check(password, password_hash))
    finally:
        hasher.close()


def test_init_db_is_idempotent(cli_app: Quart) -> None:
    first = invoke(cli_app, "init-db")
    assert first.exit_code == 0, first.output
    assert f"schema version {LATEST}" in first.output
    second = invoke(cli_app, "init-db")
    assert second.exit_code == 0 and f"schema version {LATEST}" in second.output
    assert rows(cli_app, "SELECT count(*) FROM users") == [(0,)]


def test_create_user_reads_password_from_stdin(cli_app: Quart) -> None:
    result = invoke(
        cli_app, "create-user", "Grace@Example.com", "--name", "Grace Hopper", input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert "Created grace@example.com." in result.output
    assert PASSWORD not in result.output
    ((email, name, password_hash),) = rows(cli_app, "SELECT email, name, password_hash FROM users")
    assert (email, name) == ("grace@example.com", "Grace Hopper")
    assert password_matches(PASSWORD, password_hash)
    assert not password_matches(PASSWORD + "!", password_hash)


def test_created_user_can_sign_in(cli_app: Quart) -> None:
    assert invoke(cli_app, "create-user", "grace@example.com", input=PASSWORD + "\n").exit_code == 0

    async def sign_in() -> int:
        async with cli_app.test_app():
            response = await cli_app.test_client().post(
                "/api/login", json={"email": "grace@example.com", "password": PASSWORD}
            )
            return int(response.status_code)

    assert asyncio.run(sign_in()) == 200
    assert rows(cli_app, "SELECT name FROM users") == [
        ("grace",)
    ]  # name defaults to the local part


@pytest.mark.parametrize(
    ("args", "stdin", "exit_code", "message"),
    [
        (["create-user", "not-an-email"], PASSWORD, 2, "valid email"),
        (["create-user", "weak@example.com"], "password123", 1, "too easy to guess"),
        (["create-user", "short@example.com"], "short", 1, "at least 8"),
        (["create-user", "empty@example.com"], "", 1, "at least 8"),
    ],
)
def test_create_user_refusals(
    cli_app: Quart, args: list[str], stdin: str, exit_code: int, message: str
) -> None:
    assert invoke(cli_app, "init-db").exit_code == 0
    result = invoke(cli_app, *args, input=stdin + "\n")
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert rows(cli_app, "SELECT count(*) FROM users") == [(0,)]


def test_create_user_twice_is_refused(cli_app: Quart) -> None:
    assert invoke(cli_app, "create-user", "ada@example.com", input=PASSWORD + "\n").exit_code == 0
    result = invoke(cli_app, "create-user", "ADA@example.com", input=PASSWORD + "\n")
    assert result.exit_code == 1
    assert "already registered" in result.output
    assert rows(cli_app, "SELECT count(*) FROM users") == [(1,)]


def test_purge_sessions_deletes_only_expired(cli_app: Quart) -> None:
    assert invoke(cli_app, "create-user", "ada@example.com", input=PASSWORD + "\n").exit_code == 0
    ((user_id,),) = rows(cli_app, "SELECT id FROM users")
    now, idle = time.time(), cli_app.config["SESSION_IDLE_TIMEOUT"]
    planted = [
        ("live", False, now, now + 100),
        ("remembered", True, now - 2 * idle, now + 100),
        ("idle", False, now - idle - 1, now + 100),
        ("ended", True, now, now - 1),
    ]
    for tag, remember, last_seen, expires_at in planted:
        rows(
            cli_app,
            """INSERT INTO sessions (id, token_hash, user_id, data, remember, created_at, last_seen, expires_at)
               VALUES (?, ?, ?, '{}', ?, ?, ?, ?)""",
            tag,
            tag.encode(),
            user_id,
            remember,
            last_seen,
            last_seen,
            expires_at,
        )
    result = invoke(cli_app, "purge-sessions")
    assert result.exit_code == 0, result.output
    assert "Deleted 2 expired session(s)." in result.output
    assert sorted(r[0] for r in rows(cli_app, "SELECT id FROM sessions")) == ["live", "remembered"]
    again = invoke(cli_app, "purge-sessions")
    assert "Deleted 0 expired session(s)." in again.output


def test_quart_cli_with_database_from_environment(config: dict[str, Any], tmp_path: Path) -> None:
    """As an admin runs it: `quart --app quart_auth_app ...`, configured by QUART_* variables."""
    env = {
        **os.environ,
        "QUART_DATABASE": config["DATABASE"],
        "QUART_SECRET_KEY": "cli test secret",
        "QUART_BCRYPT_ROUNDS": "4",
    }
    if config.get("DATABASE_URL"):
        env["QUART_DATABASE_URL"] = config["DATABASE_URL"]
    quart = [sys.executable, "-m", "quart", "--app", "quart_auth_app"]

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*quart, *args],
            input=stdin,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    init = run("init-db")
    assert init.returncode == 0, init.stderr
    assert f"schema version {LATEST}" in init.stdout
    created = run("create-user", "ops@example.com", "--name", "Ops", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    purged = run("purge-sessions")
    assert purged.returncode == 0 and "Deleted 0" in purged.stdout
    app = create_app(config)
    assert rows(app, "SELECT email, name FROM users") == [("ops@example.com", "Ops")]
    if not config.get("DATABASE_URL"):
        assert Path(config["DATABASE"]).is_file()
