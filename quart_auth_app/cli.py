"""Admin commands: `quart --app quart_auth_app init-db | create-user | purge-sessions`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .purge import purge_expired
from .services import services
from .validation import ValidationFailed, check_email, check_new_password

if TYPE_CHECKING:
    from quart import Quart

    from .store import Store

T = TypeVar("T")


def _run(app: Quart, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` against the app's store in a fresh event loop, closing the store after.

    The bcrypt pool stays open: it belongs to the app, which may run more commands
    (its idle threads end with the process).
    """
    store = services(app).store

    async def main() -> T:
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def register_commands(app: Quart) -> None:
    """Attach the admin commands to `app.cli`."""

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create or migrate the database schema."""
        version = _run(app, lambda store: store.migrate())
        click.echo(f"Database ready ({services(app).store.engine}, schema version {version}).")

    @app.cli.command("create-user")
    @click.argument("email")
    @click.option("--name", default="", help="Display name (defaults to the part before @).")
    def create_user(email: str, name: str) -> None:
        """Create a user; the password is prompted, or read from stdin when piped."""
        try:
            email = check_email(email)
        except ValidationFailed as exc:
            raise click.BadParameter(exc.fields["email"], param_hint="EMAIL") from None
        name = name.strip() or email.split("@")[0]
        if sys.stdin.isatty():
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        problem = check_new_password(password, app.config, [email, name])
        if problem:
            raise click.ClickException(problem)
        hasher = services(app).hasher

        async def work(store: Store) -> Any:
            return await store.insert_user(email, name, await hasher.hash(password), time.time())

        if _run(app, work) is None:
            raise click.ClickException(f"{email} is already registered.")
        click.echo(f"Created {email}.")

    @app.cli.command("purge-sessions")
    def purge_sessions() -> None:
        """Delete expired sessions and stale throttle counters."""
        deleted = _run(app, lambda store: purge_expired(app.config, store))
        click.echo(f"Deleted {deleted} expired session(s).")
