"""Packaging (issue 2): a normal, non-editable install finds its templates, schema and static files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = textwrap.dedent(
    """
    import asyncio, sys, tempfile
    import quart_auth_app
    from quart_auth_app import create_app

    assert quart_auth_app.__file__.startswith(sys.argv[1]), quart_auth_app.__file__

    async def main():
        folder = tempfile.mkdtemp()
        app = create_app({"SECRET_KEY": "x", "BCRYPT_ROUNDS": 4, "DATABASE": folder + "/db.sqlite3"})
        assert app.template_folder.startswith(sys.argv[1]), app.template_folder
        async with app.test_app():
            client = app.test_client()
            for path in ("/", "/login", "/register", "/static/style.css"):
                response = await client.get(path)
                assert response.status_code == 200, (path, response.status_code)
            response = await client.post(
                "/api/register",
                json={"email": "wheel@example.com", "password": "correct horse battery staple"},
            )
            assert response.status_code == 201, response.status_code
        print("wheel ok")

    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("quart_auth_app-*.whl")
    yield built


@pytest.mark.parametrize(
    "member",
    [
        "quart_auth_app/__init__.py",
        "quart_auth_app/py.typed",
        "quart_auth_app/templates/base.html",
        "quart_auth_app/templates/login.html",
        "quart_auth_app/templates/_forms.html",
        "quart_auth_app/sql/sqlite.sql",
        "quart_auth_app/sql/postgres.sql",
        "quart_auth_app/static/style.css",
        "quart_auth_app/static/app.js",
    ],
)
def test_wheel_contains(wheel: Path, member: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert member in archive.namelist()


def test_wheel_holds_every_template(wheel: Path) -> None:
    expected = {f"quart_auth_app/templates/{p.name}" for p in (ROOT / "templates").glob("*.html")}
    with zipfile.ZipFile(wheel) as archive:
        assert expected <= set(archive.namelist())
        assert not [n for n in archive.namelist() if n.startswith(("tests/", "bench/", ".venv"))]


def test_installed_wheel_serves_pages_and_creates_its_schema(wheel: Path, tmp_path: Path) -> None:
    """Unpacked away from the checkout, the package alone renders pages and migrates."""
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    result = subprocess.run(
        [sys.executable, "-c", SMOKE, str(target)],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wheel ok" in result.stdout
