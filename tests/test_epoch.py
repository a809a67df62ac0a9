"""Credential epochs (SPEC §5): nothing made with old credentials outlives their change.

The race an attacker can win without epochs: a sign-in with the old password passes
bcrypt, the owner changes the password (ending every other session), and then the
sign-in saves its session. Here the sign-in is held between its bcrypt check and its
session write, deterministically, on both engines and across two app instances (two
workers on one SQLite file, two nodes on one PostgreSQL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from conftest import PASSWORD
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app import create_app
from quart_auth_app.passwords import Hasher
from quart_auth_app.sessions import expiry, new_token
from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client

NEW_PASSWORD = "a different horse, stapled twice"


class Gate:
    """Holds the first password check of `password` after bcrypt ran, until released."""

    def __init__(self, hasher: Hasher, password: str) -> None:
        self.checked = asyncio.Event()
        self.release = asyncio.Event()
        real: Callable[[str, str | None], Awaitable[bool]] = hasher.check

        async def held(candidate: str, password_hash: str | None) -> bool:
            ok = await real(candidate, password_hash)
            if candidate == password and not self.checked.is_set():
                self.checked.set()
                await self.release.wait()
            return ok

        hasher.check = held  # type: ignore[method-assign]


@asynccontextmanager
async def node(config: dict[str, Any]) -> AsyncIterator[Quart]:
    """Another app instance on the same database: a second worker, or a second node."""
    other = create_app(config)
    async with other.test_app():
        yield other


async def sign_in(client: QuartClient, kind: str, email: str, remember: bool) -> Any:
    if kind == "api":
        body = {"email": email, "password": PASSWORD, "remember": remember}
        return await client.post("/api/login", json=body)
    form = {"email": email, "password": PASSWORD, **({"remember": "1"} if remember else {})}
    return await client.post("/login", form=form)


async def is_signed_in(client: QuartClient) -> bool:
    status = (await client.get("/api/me")).status_code
    assert status in (200, 401)
    return status == 200


@pytest.mark.parametrize("remember", [False, True], ids=["session", "remember"])
@pytest.mark.parametrize("kind", ["api", "html"])
@pytest.mark.parametrize("where", ["same", "other"], ids=["one-node", "two-nodes"])
async def test_sign_in_held_across_a_password_change_is_dead(
    app: Quart, config: dict[str, Any], user: User, kind: str, remember: bool, where: str
) -> None:
    gate = Gate(app.extensions["auth_hasher"], PASSWORD)
    attacker = app.test_client()
    signing_in = asyncio.create_task(sign_in(attacker, kind, user.email, remember))
    await asyncio.wait_for(gate.checked.wait(), 10)  # bcrypt said yes to the old password

    async with node(config) as other:
        owner_app = other if where == "other" else app
        owner = await authenticated_client(owner_app, user)
        body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        assert (await owner.post("/api/password", json=body)).status_code == 204

        gate.release.set()
        answer = await asyncio.wait_for(signing_in, 10)
        assert answer.status_code in (200, 303)  # it did pass its check, before the change

        assert not await is_signed_in(attacker)  # on the node it signed in on
        replay = other.test_client()
        replay.cookie_jar = attacker.cookie_jar
        assert not await is_signed_in(replay)  # and on the other one
        assert await is_signed_in(owner)
        listed = await owner.get("/api/sessions")
        assert len((await listed.get_json())["sessions"]) == 1  # only the owner's


async def test_epoch_moves_with_every_password_change(app: Quart, user: User) -> None:
    client = await authenticated_client(app, user)
    for n, new in enumerate(["first new horse battery", "second new horse battery"], 1):
        current = PASSWORD if n == 1 else "first new horse battery"
        body = {"current_password": current, "new_password": new}
        assert (await client.post("/api/password", json=body)).status_code == 204
        stored = await app.extensions["auth_store"].select_user_by_id(user.id)
        assert stored.epoch == user.epoch + n
        assert await is_signed_in(client)  # the session that changed it moves on with it


async def test_a_session_of_an_old_epoch_is_dead_at_load(app: Quart, user: User) -> None:
    """Whatever wrote it (a race, a node that missed the change): the load refuses it."""
    client = await authenticated_client(app, user)
    store = app.extensions["auth_store"]
    token, token_hash = new_token()
    record = (await store.select_sessions_of_user(user.id, expiry(app.config, time.time())))[0]
    await store.insert_session(replace(record, id="stale", token_hash=token_hash))
    stale = app.test_client()
    stale.set_cookie("localhost", app.config["SESSION_COOKIE_NAME"], token)
    assert await is_signed_in(stale) and await is_signed_in(client)
    await store.change_user_password(user.id, user.password_hash, None)  # epoch + 1, rows go
    await store.insert_session(replace(record, id="stale", token_hash=token_hash))  # written late
    assert not await is_signed_in(stale)
    assert not await is_signed_in(client)


async def test_rehash_after_the_race_never_restores_the_old_password(app: Quart) -> None:
    """A sign-in that upgrades the hash's cost must not write the old password back."""
    app.extensions["auth_hasher"].rounds = 5  # the app's cost went up since the hash was made
    store = app.extensions["auth_store"]
    old_hash = await Hasher(4, 1).hash(PASSWORD)
    user = await store.insert_user("bob@example.com", "Bob", old_hash, time.time())
    gate = Gate(app.extensions["auth_hasher"], PASSWORD)
    signing_in = asyncio.create_task(sign_in(app.test_client(), "api", user.email, False))
    await asyncio.wait_for(gate.checked.wait(), 10)
    owner = await authenticated_client(app, user)
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert (await owner.post("/api/password", json=body)).status_code == 204
    gate.release.set()
    assert (await asyncio.wait_for(signing_in, 10)).status_code == 200

    new = {"email": user.email, "password": NEW_PASSWORD}
    assert (await app.test_client().post("/api/login", json=new)).status_code == 200
    old = {"email": user.email, "password": PASSWORD}
    assert (await app.test_client().post("/api/login", json=old)).status_code == 401
