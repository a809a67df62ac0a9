"""Configuration (SPEC §2): defaults, QUART_* environment variables, the mapping, the secret."""

from __future__ import annotations

import os
import stat
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypercorn.config import Config as HypercornConfig

from quart_auth_app import create_app
from quart_auth_app.config import DEFAULTS, load_secret

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No QUART_* variables from the outside world leak into these tests."""
    for name in list(os.environ):
        if name.startswith("QUART_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("DATABASE", None),
        ("DATABASE_URL", None),
        ("BCRYPT_ROUNDS", 12),
        ("SESSION_IDLE_TIMEOUT", 7200),
        ("SESSION_LIFETIME", 86400),
        ("REMEMBER_LIFETIME", 2592000),
        ("SESSION_COOKIE_SECURE", False),
        ("THROTTLE_ENABLED", True),
        ("THROTTLE_ACCOUNT_FAILURES", 5),
        ("THROTTLE_ADDRESS_FAILURES", 100),
        ("THROTTLE_WINDOW", 900),
        ("MAX_CONTENT_LENGTH", 65536),
        ("SESSION_COOKIE_NAME", "session"),
    ],
)
def test_spec_keys_have_their_defaults(
    clean_env: Any, tmp_path: Path, key: str, default: Any
) -> None:
    assert DEFAULTS[key] == default
    if key != "DATABASE":  # DATABASE is filled in by the factory (next test)
        app = create_app({"SECRET_KEY": "x", "DATABASE": str(tmp_path / "db.sqlite3")})
        assert app.config[key] == default


def test_database_defaults_to_the_instance_folder(clean_env: Any) -> None:
    app = create_app({"SECRET_KEY": "x"})
    assert Path(app.config["DATABASE"]) == Path(app.instance_path) / "quart_auth_app.sqlite3"
    assert app.config.get("DEBUG") is not True


@pytest.mark.parametrize(
    ("name", "value", "key", "expected"),
    [
        ("QUART_BCRYPT_ROUNDS", "5", "BCRYPT_ROUNDS", 5),
        ("QUART_THROTTLE_ENABLED", "false", "THROTTLE_ENABLED", False),
        ("QUART_SESSION_COOKIE_SECURE", "true", "SESSION_COOKIE_SECURE", True),
        ("QUART_SESSION_IDLE_TIMEOUT", "60", "SESSION_IDLE_TIMEOUT", 60),
        ("QUART_MAX_CONTENT_LENGTH", "1024", "MAX_CONTENT_LENGTH", 1024),
        (
            "QUART_DATABASE_URL",
            "postgresql://u@localhost/db",
            "DATABASE_URL",
            "postgresql://u@localhost/db",
        ),
    ],
)
def test_environment_variables_configure_the_app(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, key: str, expected: Any
) -> None:
    clean_env.setenv(name, value)
    app = create_app({"SECRET_KEY": "x", "DATABASE": str(tmp_path / "db.sqlite3")})
    assert app.config[key] == expected


def test_environment_database_path(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "from-env.sqlite3"
    clean_env.setenv("QUART_DATABASE", str(path))
    clean_env.setenv("QUART_SECRET_KEY", "from env")
    app = create_app()
    assert app.config["DATABASE"] == str(path)
    assert app.config["SECRET_KEY"] == "from env"
    assert path.parent.is_dir()  # made ready for the first start


def test_mapping_overrides_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("QUART_BCRYPT_ROUNDS", "5")
    app = create_app({"SECRET_KEY": "x", "DATABASE": str(tmp_path / "db"), "BCRYPT_ROUNDS": 6})
    assert app.config["BCRYPT_ROUNDS"] == 6
    assert app.extensions["auth_hasher"].rounds == 6


async def test_environment_configures_behaviour(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not only the config dict: the configured value is what the app enforces."""
    clean_env.setenv("QUART_MAX_CONTENT_LENGTH", "100")
    app = create_app({"SECRET_KEY": "x", "DATABASE": str(tmp_path / "db.sqlite3")})
    async with app.test_app():
        response = await app.test_client().post(
            "/api/login", json={"email": "a@example.com", "password": "p" * 200}
        )
        assert response.status_code == 413


def test_factory_builds_independent_apps(clean_env: Any, tmp_path: Path) -> None:
    first = create_app({"SECRET_KEY": "x", "DATABASE": str(tmp_path / "one.sqlite3")})
    second = create_app({"SECRET_KEY": "x", "DATABASE": str(tmp_path / "two.sqlite3")})
    assert first is not second
    assert first.extensions["auth_store"] is not second.extensions["auth_store"]


# the secret


def test_secret_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    secret = load_secret(str(tmp_path / "instance"))
    path = tmp_path / "instance" / "secret_key"
    assert len(secret) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(str(tmp_path / "instance")) == secret
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary files left


def test_secret_races_agree(tmp_path: Path) -> None:
    """Several workers starting at once all read the one secret that won."""
    results: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(load_secret(str(tmp_path)))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8 and len(set(results)) == 1


def test_app_without_secret_keeps_one_in_the_instance_folder(
    clean_env: Any, tmp_path: Path
) -> None:
    app = create_app({"DATABASE": str(tmp_path / "db.sqlite3")})
    path = Path(app.instance_path) / "secret_key"
    assert app.config["SECRET_KEY"] == path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = create_app({"DATABASE": str(tmp_path / "db.sqlite3")})
    assert again.config["SECRET_KEY"] == app.config["SECRET_KEY"]


# hypercorn.toml


def test_hypercorn_toml_is_sized_for_load() -> None:
    settings = tomllib.loads((ROOT / "hypercorn.toml").read_text())
    assert settings["workers"] == 2
    assert settings["backlog"] >= 1024
    assert settings["bind"] == ["127.0.0.1:5000"]
    assert settings.get("include_server_header") is False
    config = HypercornConfig.from_toml(str(ROOT / "hypercorn.toml"))  # Hypercorn itself accepts it
    assert config.workers == 2 and config.backlog >= 1024
