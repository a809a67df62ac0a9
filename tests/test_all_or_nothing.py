"""All or nothing (SPEC §7): a credential change, a logout, a revocation either happen
whole or not at all, whatever the client does (hangs up) or whichever statement fails.

The password change is interrupted at every statement it runs, by a failing statement
and by the client going away; afterwards the account is either exactly as before (old
password, other sessions alive) or exactly as after (new password, others ended), on
both engines.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiosqlite
import asyncpg
import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app.passwords import Hasher
from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client

NEW_PASSWORD = "a different horse, stapled twice"


class Tripwire:
    """Counts the database statements the app runs once armed; fails the `at`-th one."""

    def __init__(self, at: int, how: str) -> None:
        self.at, self.how, self.seen, self.armed = at, how, 0, False
        self.reached = asyncio.Event()

    def step(self) -> None:
        if not self.armed:
            return
        self.seen += 1
        if self.seen == self.at:
            self.reached.set()
            if self.how == "error":
                raise sqlite3.OperationalError("disk I/O error (injected)")


@contextmanager
def tripwire(monkeypatch: pytest.MonkeyPatch, at: int, how: str) -> Iterator[Tripwire]:
    wire = Tripwire(at, how)

    def wrap(cls: Any, name: str, error: type[BaseException]) -> None:
        real = getattr(cls, name)

        def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                wire.step()
            except sqlite3.OperationalError as exc:
                if error is sqlite3.OperationalError:
                    raise
                raise error(str(exc)) from None
            return real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, patched)

    wrap(aiosqlite.Connection, "execute", sqlite3.OperationalError)
    for name in ("execute", "fetchrow", "fetch", "fetchval"):
        wrap(asyncpg.connection.Connection, name, asyncpg.PostgresConnectionError)
    yield wire


def state(app: Quart, user: User) -> tuple[str, int, int]:
    """(password hash, epoch, sessions) of the user, read beside the app."""
    [(password_hash, epoch)] = rows(
        app, "SELECT password_hash, epoch FROM users WHERE id = ?", user.id
    )
    [(sessions,)] = rows(app, "SELECT count(*) FROM sessions WHERE user_id = ?", user.id)
    return password_hash, epoch, sessions


async def matches(app: Quart, user: User, password: str) -> bool:
    [(password_hash,)] = rows(app, "SELECT password_hash FROM users WHERE id = ?", user.id)
    return await Hasher(4, 1).check(password, password_hash)


CHANGE = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}


async def hang_up(client: QuartClient, path: str, body: Any, when: asyncio.Event) -> int | None:
    """POST `body`, and disconnect as a client would once `when` is set (Quart then cancels
    the view, as under Hypercorn); the status when the answer came first, else None."""
    headers = {"Content-Type": "application/json"}
    async with client.request(path, method="POST", headers=headers) as connection:
        await connection.send(json.dumps(body).encode())
        await connection.send_complete()
        handling = asyncio.ensure_future(connection._task)  # type: ignore[attr-defined]
        waiting = asyncio.ensure_future(when.wait())
        await asyncio.wait([handling, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not handling.done():
            await connection.disconnect()
            return None
    return connection.status_code  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("how", ["error", "hang-up"])
@pytest.mark.parametrize("at", range(1, 21))
async def test_password_change_interrupted_anywhere_is_all_or_nothing(
    app: Quart, user: User, monkeypatch: pytest.MonkeyPatch, at: int, how: str
) -> None:
    owner = await authenticated_client(app, user)
    thief = await authenticated_client(app, user)  # another session, maybe a stolen one
    before = state(app, user)
    with tripwire(monkeypatch, at, how) as wire:
        wire.armed = True
        if how == "hang-up":
            status = await hang_up(owner, "/api/password", CHANGE, wire.reached)
        else:
            status = (await owner.post("/api/password", json=CHANGE)).status_code
        await asyncio.sleep(0.2)  # a shielded write finishes on its own
        wire.armed = False

    after = state(app, user)
    thief_in = (await thief.get("/api/me")).status_code == 200
    if await matches(app, user, NEW_PASSWORD):
        assert after[1] == before[1] + 1, "new password, old epoch"
        assert not thief_in, "new password, other session alive"
        assert after[2] <= 1
    else:
        assert after == before, "old password, yet something changed"
        assert thief_in
        assert status is None or status == 503


async def test_logout_finishes_when_the_client_hangs_up(
    app: Quart, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await authenticated_client(app, user)
    store = app.extensions["auth_store"]
    entered, release = asyncio.Event(), asyncio.Event()
    real = store.delete_session_by_hash

    async def slow_delete(token_hash: bytes) -> None:
        entered.set()
        await release.wait()
        await real(token_hash)

    monkeypatch.setattr(store, "delete_session_by_hash", slow_delete)
    assert await hang_up(client, "/api/logout", {}, entered) is None  # gone mid-logout
    release.set()
    await asyncio.sleep(0.1)
    assert rows(app, "SELECT count(*) FROM sessions WHERE user_id = ?", user.id) == [(0,)]


async def test_revocation_finishes_when_the_client_hangs_up(
    app: Quart, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await authenticated_client(app, user)
    await authenticated_client(app, user)  # the session to revoke
    store = app.extensions["auth_store"]
    entered, release = asyncio.Event(), asyncio.Event()
    real = store.delete_sessions_of_user

    async def slow_delete(*args: Any, **kwargs: Any) -> int:
        entered.set()
        await release.wait()
        return int(await real(*args, **kwargs))

    monkeypatch.setattr(store, "delete_sessions_of_user", slow_delete)
    assert await hang_up(client, "/api/sessions/revoke-others", {}, entered) is None
    release.set()
    await asyncio.sleep(0.1)
    assert rows(app, "SELECT count(*) FROM sessions WHERE user_id = ?", user.id) == [(1,)]
