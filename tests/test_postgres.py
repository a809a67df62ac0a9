"""PostgreSQL specifics of the store: atomicity across pools (as across nodes), migrations, outages."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pgcluster
import pytest

from quart_auth_app import create_app
from quart_auth_app.store import SessionRecord, StoreUnavailable, open_store
from quart_auth_app.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

PG_DSN = os.environ.get("QUART_AUTH_TEST_PG_DSN")
NODES = 3  # separate pools stand in for separate app nodes
HASH = b"\x01" * 32


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[list[PostgresStore]]:
    """Several stores (pools) on one database, as several nodes would have."""
    opened = [PostgresStore(pg_url, pool_size=5) for _ in range(NODES)]
    for store in opened:
        await store.open()
    yield opened
    for store in opened:
        await store.close()


@pytest.fixture
async def empty_url(pg_template: str) -> AsyncIterator[str]:
    """A PostgreSQL database with no schema at all."""
    assert PG_DSN is not None
    name = await pgcluster.create_database(PG_DSN)
    yield pgcluster.database_url(PG_DSN, name)
    await pgcluster.drop_database(PG_DSN, name)


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    db = await asyncpg.connect(url)
    try:
        return list(await db.fetch(sql))
    finally:
        await db.close()


def session_record(data: dict[str, object]) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        id="s1",
        token_hash=HASH,
        user_id=None,
        data=data,
        remember=False,
        created_at=now,
        last_seen=now,
        expires_at=now + 3600,
        user_agent="test",
        ip="127.0.0.1",
    )


def test_open_store_picks_postgresql_for_database_url() -> None:
    store = open_store({"DATABASE_URL": "postgresql://u@127.0.0.1/db", "DATABASE_POOL_SIZE": 3})
    assert isinstance(store, PostgresStore)
    assert (store.engine, store.pool_size) == ("postgresql", 3)


async def test_concurrent_sign_ups_of_one_email_create_one_user(
    stores: list[PostgresStore], pg_url: str
) -> None:
    attempts = [
        stores[i % NODES].insert_user("race@example.com", f"n{i}", "hash", time.time())
        for i in range(30)
    ]
    results = await asyncio.gather(*attempts)
    winners = [user for user in results if user is not None]
    assert len(winners) == 1
    rows = await fetch(pg_url, "SELECT id, name FROM users WHERE email = 'race@example.com'")
    assert [(r["id"], r["name"]) for r in rows] == [(winners[0].id, winners[0].name)]


async def test_concurrent_merges_of_different_keys_are_all_kept(
    stores: list[PostgresStore],
) -> None:
    await stores[0].insert_session(session_record({"keep": 1, "drop": 2}))
    merges = [
        stores[i % NODES].merge_session_data(HASH, {f"k{i}": i}, [], time.time()) for i in range(40)
    ]
    merges.append(stores[1].merge_session_data(HASH, {}, ["drop"], time.time()))
    assert all(await asyncio.gather(*merges))
    record = await stores[2].select_session_by_hash(HASH)
    assert record is not None
    assert record.data == {"keep": 1, **{f"k{i}": i for i in range(40)}}


async def test_merge_into_a_deleted_session_reports_false(stores: list[PostgresStore]) -> None:
    assert await stores[0].merge_session_data(HASH, {"a": 1}, [], time.time()) is False


async def test_concurrent_throttle_hits_count_exactly(stores: list[PostgresStore]) -> None:
    now = time.time()
    hits = [stores[i % NODES].hit_throttles({"account:x": 50}, now, 900) for i in range(60)]
    admitted = [a.retry_after is None for a in await asyncio.gather(*hits)]
    assert admitted.count(True) == 50  # exactly the limit, whichever node counted
    assert (await stores[1].select_throttle("account:x", now, 900))[:2] == (50, now)


async def test_throttle_window_restarts_after_it_closes(stores: list[PostgresStore]) -> None:
    await stores[0].hit_throttles({"k": 9}, 1000.0, 10)
    await stores[0].hit_throttles({"k": 9}, 1005.0, 10)
    assert (await stores[1].select_throttle("k", 1005.0, 10))[:2] == (2, 1000.0)
    await stores[1].hit_throttles({"k": 9}, 1010.0, 10)
    assert (await stores[1].select_throttle("k", 1010.0, 10))[:2] == (1, 1010.0)


async def test_concurrent_migrations_run_once(empty_url: str) -> None:
    racers = [PostgresStore(empty_url, pool_size=1) for _ in range(6)]
    try:
        versions = await asyncio.gather(*(store.migrate() for store in racers))
        again = await racers[0].migrate()
    finally:
        for store in racers:
            await store.close()
    assert set(versions) == {again} and again >= 1
    rows = await fetch(empty_url, "SELECT version FROM schema_version ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, again + 1))
    tables = await fetch(
        empty_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
    )
    assert [r["tablename"] for r in tables] == [
        "events",
        "mail_outbox",
        "passkeys",
        "recovery_codes",
        "schema_version",
        "sessions",
        "throttle",
        "tokens",
        "totp",
        "used_challenges",
        "users",
    ]


async def test_first_use_migrates_a_fresh_database(empty_url: str) -> None:
    store = PostgresStore(empty_url)
    try:
        assert await store.count_sessions() == 0
    finally:
        await store.close()


async def test_nul_in_lookups_matches_nothing_instead_of_failing(
    stores: list[PostgresStore],
) -> None:
    assert await stores[0].select_user_by_email("a\x00@example.com") is None
    assert await stores[0].delete_session_of_user(1, "id\x00") is False


async def test_unreachable_server_is_unavailable_quickly_and_start_survives() -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{pgcluster.free_port()}/x")
    started = time.monotonic()
    await store.open()  # a node may start before its database: it must not crash
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.insert_user("a@example.com", "a", "h", time.time())
    await store.close()
    assert time.monotonic() - started < 10


async def test_app_answers_503_when_postgresql_is_unreachable(tmp_path: Path) -> None:
    """Health, session lookups, sign-in and pages: a clean 503, never a 500."""
    down = f"postgresql://postgres@127.0.0.1:{pgcluster.free_port()}/x"
    app = create_app({"TESTING": True, "SECRET_KEY": "s", "DATABASE_URL": down,
                      "DATABASE": str(tmp_path / "unused.sqlite3")})  # fmt: skip
    async with app.test_app():
        client = app.test_client()
        health = await client.get("/healthz")
        assert (health.status_code, await health.get_json()) == (
            503,
            {"status": "unavailable", "engine": "postgresql"},
        )
        cookie = {"Cookie": "session=" + "A" * 43}
        me = await client.get("/api/me", headers=cookie)
        assert (me.status_code, (await me.get_json())["error"]) == (503, "unavailable")
        page = await client.get("/protected", headers=cookie)
        assert page.status_code == 503 and page.mimetype == "text/html"
        login = await client.post(
            "/api/login", json={"email": "ada@example.com", "password": "x" * 10}
        )
        assert (login.status_code, (await login.get_json())["error"]) == (503, "unavailable")
        form = await client.post(
            "/register", form={"email": "b@example.com", "password": "plum tractor velvet orbit"}
        )
        assert form.status_code == 503
