"""Everything per user is bounded (SPEC §7): sessions per user, and no parsing per render."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from conftest import PASSWORD
from dbrows import rows
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app import agents
from quart_auth_app.purge import purge_expired
from quart_auth_app.sessions import ServerSession
from quart_auth_app.store import User
from quart_auth_app.testing import authenticated_client, create_user, login_session

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


async def test_unread_flashes_are_capped(app: Quart, user: User) -> None:
    """An API client that triggers HTML flashes and never reads them: the row stays small."""
    client = await authenticated_client(app, user)
    for _ in range(40):
        response = await client.post("/account/sessions/revoke-others")
        assert response.status_code == 303
    [(data,)] = rows(app, "SELECT data FROM sessions WHERE user_id = ?", user.id)
    assert len(data) <= app.config["SESSION_MAX_BYTES"]
    flashes = json.loads(data)["_flashes"]
    assert len(flashes) == app.config["SESSION_MAX_FLASHES"]
    page = await (await client.get("/account")).get_data(as_text=True)
    assert page.count("Signed out 0 other session(s).") == app.config["SESSION_MAX_FLASHES"]


async def test_big_flashes_are_dropped_oldest_first(app: Quart) -> None:
    session = ServerSession()
    session["_flashes"] = [("info", f"{n}:" + "x" * 1000) for n in range(8)]
    session.bound(max_flashes=10, max_bytes=4096)
    assert [m.split(":")[0] for _, m in session["_flashes"]] == ["4", "5", "6", "7"]
    assert len(json.dumps(session)) <= 4096


async def test_revocations_are_rate_limited_per_session(app: Quart, user: User) -> None:
    limit = int(app.config["THROTTLE_SESSION_WRITES"])
    client = await authenticated_client(app, user)
    for _ in range(limit):
        await login_session(app, user)
        assert (await client.post("/api/sessions/revoke-others", json={})).status_code == 200
    await login_session(app, user)
    refused = await client.post("/api/sessions/revoke-others", json={})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    other = await authenticated_client(app, user)  # another session of the same user: its own
    assert (await other.post("/api/sessions/revoke-others", json={})).status_code == 200


async def test_api_sessions_are_paginated(app: Quart, user: User) -> None:
    client = await authenticated_client(app, user)
    for _ in range(4):
        await login_session(app, user)
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = await (await client.get(f"/api/sessions?limit=2&offset={offset}")).get_json()
        assert len(page["sessions"]) <= 2
        seen += [s["id"] for s in page["sessions"]]
        offset = page["next_offset"]
    assert len(seen) == len(set(seen)) == 5
    for bad in ("limit=0", "limit=101", "offset=-1", "limit=abc"):
        response = await client.get(f"/api/sessions?{bad}")
        assert response.status_code == 400, bad
        assert (await response.get_json())["error"] == "invalid_input"


async def test_account_page_is_paginated(app: Quart, user: User) -> None:
    app.config["PAGE_SIZE"] = 2
    client = await authenticated_client(app, user)
    for _ in range(2):
        await login_session(app, user)
    first = await (await client.get("/account")).get_data(as_text=True)
    assert first.count('class="device"') == 2 and "Older sessions" in first
    second = await (await client.get("/account?page=2")).get_data(as_text=True)
    assert second.count('class="device"') == 1 and "Newer sessions" in second
    odd = await client.get("/account?page=99999999999999")
    assert odd.status_code == 200


async def test_events_are_capped_per_user_by_the_purge(app: Quart, user: User) -> None:
    """The purge trims each account to its newest `events_per_user` events (failed sign-ins'
    too); a request never does (it would make a known account's failure cost more)."""
    store = app.extensions["auth_store"]
    store.events_per_user = 5
    other = await create_user(app, "bob@example.com", PASSWORD)
    for n in range(8):
        await store.insert_event(user.id, f"event {n}", "10.0.0.1", "agent", time.time() + n)
        await store.insert_event(other.id, f"event {n}", "10.0.0.1", "agent", time.time() + n)
    for _ in range(3):  # failed sign-ins record their events through the throttle
        body = {"email": user.email, "password": "wrong password"}
        assert (await app.test_client().post("/api/login", json=body)).status_code == 401
    assert len(await store.select_events_of_user(user.id, 50)) == 11  # nothing trimmed yet
    await purge_expired(app.config, store)
    kinds = [e.kind for e in await store.select_events_of_user(user.id, 50)]
    assert kinds == ["event 7", "event 6", "event 5", "event 4", "event 3"]  # the newest
    kinds = [e.kind for e in await store.select_events_of_user(other.id, 50)]
    assert kinds == ["event 7", "event 6", "event 5", "event 4", "event 3"]


@pytest.mark.parametrize("trim_first", [True, False], ids=["trim-then-settle", "settle-then-trim"])
async def test_a_success_settling_while_the_purge_trims_loses_nothing_else(
    app: Quart, user: User, trim_first: bool
) -> None:
    """A right password's attempt writes a provisional event and, once bcrypt agrees, drops
    it (`settle`). The purge's trim may delete that row first: the settle then deletes
    nothing, fails nothing, and still clears the throttle; either order leaves only the
    events the trim keeps."""
    store = app.extensions["auth_store"]
    for n in range(3):  # newer than the attempt's: the trim reaches the provisional row
        await store.insert_event(user.id, f"event {n}", "10.0.0.1", "agent", time.time() + 10 + n)
    throttle = app.extensions["auth_services"].throttle
    async with app.test_request_context("/api/login", method="POST"):
        attempt = await throttle.check_signin(user.email, user, "sign-in failed")
        assert attempt.event_id is not None
        assert len(await store.select_events_of_user(user.id, 50)) == 4  # 3 + provisional
        if trim_first:
            assert await store.trim_events(user.id, 2) == 2  # "event 0" and the provisional
            await throttle.succeeded(attempt)  # its row is gone already: nothing to delete
        else:
            await throttle.succeeded(attempt)
            assert await store.trim_events(user.id, 2) == 1
    kinds = [e.kind for e in await store.select_events_of_user(user.id, 50)]
    assert kinds == ["event 2", "event 1"]  # the provisional event is gone either way
    stored_keys = {key for (key,) in rows(app, "SELECT key FROM throttle")}
    assert attempt.clear and stored_keys.isdisjoint(attempt.clear)  # the throttle cleared


async def test_ownerless_events_go_after_a_throttle_window(app: Quart, user: User) -> None:
    """Failed sign-ins of unknown emails leave events with no owner (equal cost); the purge
    drops them once their window is over, and keeps accounts' events to EVENT_RETENTION."""
    store = app.extensions["auth_store"]
    for email in ("ghost@example.com", user.email):
        body = {"email": email, "password": "wrong password"}
        assert (await app.test_client().post("/api/login", json=body)).status_code == 401
    await purge_expired(app.config, store)  # still inside the window: both kept
    assert sorted(rows(app, "SELECT user_id IS NULL FROM events")) == [(False,), (True,)]
    window = float(app.config["THROTTLE_WINDOW"])
    rows(app, "UPDATE events SET created_at = created_at - ?", window + 1)
    await purge_expired(app.config, store)
    assert rows(app, "SELECT user_id FROM events") == [(user.id,)]


async def test_rows_from_before_device_names_are_never_parsed_per_request(
    app: Quart, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written before the device column (device '') show their raw agent's start."""
    client = await authenticated_client(app, user)
    crafted = "Mozilla/5.0 (" + "b;" * 250 + ")"
    rows(app, "UPDATE sessions SET device = '', user_agent = ? WHERE user_id = ?", crafted, user.id)
    await app.extensions["auth_store"].insert_event(user.id, "sign-in", "10.0.0.1", crafted, 1.0)

    def refuse(agent: str) -> Any:
        raise AssertionError("parsed during a request")

    agents.describe.cache_clear()
    monkeypatch.setattr(agents, "parse_user_agent", refuse)
    page = await client.get("/account")
    assert page.status_code == 200
    assert crafted[:60] in await page.get_data(as_text=True)
    listed = (await (await client.get("/api/sessions")).get_json())["sessions"]
    assert [s["device"] for s in listed] == [crafted[:60]]


async def test_two_revocations_at_once_near_the_limit_both_answer_for_what_they_did(
    app: Quart, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both pass the limit's check before either is counted, and both revoke: neither may
    then answer 429 for a revocation that happened (it used to, the second one's count
    refusing after the fact)."""
    app.config["THROTTLE_SESSION_WRITES"] = 1
    client = await authenticated_client(app, user)
    store = app.extensions["auth_store"]
    await login_session(app, user)
    await login_session(app, user)
    mine = (await (await client.get("/api/sessions")).get_json())["sessions"]
    targets = [s["id"] for s in mine if not s["current"]]
    inside, real = asyncio.Event(), store.delete_session_of_user
    entered = 0

    async def both_inside(user_id: int, session_id: str) -> bool:
        nonlocal entered
        entered += 1
        if entered == len(targets):
            inside.set()
        await inside.wait()
        return bool(await real(user_id, session_id))

    monkeypatch.setattr(store, "delete_session_of_user", both_inside)
    answers = await asyncio.gather(*(client.delete(f"/api/sessions/{t}") for t in targets))
    assert [a.status_code for a in answers] == [204, 204]
    left = (await (await client.get("/api/sessions")).get_json())["sessions"]
    assert [s["current"] for s in left] == [True]
    monkeypatch.setattr(store, "delete_session_of_user", real)
    await login_session(app, user)
    listed = (await (await client.get("/api/sessions")).get_json())["sessions"]
    [other] = [s["id"] for s in listed if not s["current"]]
    refused = await client.delete(f"/api/sessions/{other}")
    assert refused.status_code == 429  # the limit holds for what comes after
