"""Everything per user is bounded (SPEC §7): sessions per user, and no parsing per render."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app import agents
from quart_auth_app.store import User
from quart_auth_app.testing import create_user

CAP = 3
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "MAX_SESSIONS_PER_USER": CAP}


async def sign_in(app: Quart, user: User, agent: str = FIREFOX) -> QuartClient:
    client = app.test_client()
    body = {"email": user.email, "password": PASSWORD}
    response = await client.post("/api/login", json=body, headers={"User-Agent": agent})
    assert response.status_code == 200
    return client


async def is_signed_in(client: QuartClient) -> bool:
    return (await client.get("/api/me")).status_code == 200


async def test_sessions_per_user_are_capped(app: Quart, user: User) -> None:
    clients = [await sign_in(app, user) for _ in range(CAP + 2)]
    alive = [await is_signed_in(c) for c in clients]
    assert alive == [False, False, True, True, True]  # the two least recently used ended
    assert rows(app, "SELECT count(*) FROM sessions WHERE user_id = ?", user.id) == [(CAP,)]
    kinds = [k for (k,) in rows(app, "SELECT kind FROM events WHERE user_id = ?", user.id)]
    assert kinds.count("session limit reached") == 2


async def test_other_users_sessions_are_not_evicted(app: Quart, user: User) -> None:
    bob = await create_user(app, "bob@example.com", "Bob", PASSWORD)
    bobs = await sign_in(app, bob)
    for _ in range(CAP + 2):
        await sign_in(app, user)
    assert await is_signed_in(bobs)


async def test_device_name_is_parsed_once_when_the_session_starts(
    app: Quart, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    crafted = "Mozilla/5.0 (" + "a;" * 250 + ")"  # ~7 ms per parse before the bound
    client = await sign_in(app, user, FIREFOX)
    await sign_in(app, user, crafted)

    def refuse(agent: str) -> Any:
        raise AssertionError(f"parsed during a request: {agent[:40]}")

    agents.describe.cache_clear()
    monkeypatch.setattr(agents, "parse_user_agent", refuse)
    page = await client.get("/account")
    assert page.status_code == 200
    assert "Firefox 128 on Ubuntu" in await page.get_data(as_text=True)
    listed = (await (await client.get("/api/sessions")).get_json())["sessions"]
    assert {s["device"] for s in listed} >= {"Firefox 128 on Ubuntu"}


async def test_the_parser_sees_a_bounded_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = agents.parse_user_agent
    monkeypatch.setattr(agents, "parse_user_agent", lambda ua: seen.append(ua) or real(ua))
    agents.describe.cache_clear()
    agents.describe("Mozilla/5.0 " + "x" * 5000)
    assert [len(ua) for ua in seen] == [agents.PARSED_PREFIX]
