"""The store (SPEC §8): schema migrations, WAL, foreign keys, and the contract both engines keep."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from dbrows import rows
from quart import Quart

from quart_auth_app.sessions import expiry
from quart_auth_app.store import Admission, FailureEvent, SessionRecord, Store
from quart_auth_app.store.migrations import split_migrations
from quart_auth_app.store.sqlite import SQLiteStore

SCHEMA = resources.files("quart_auth_app").joinpath("sql/sqlite.sql").read_text()
LATEST = split_migrations(SCHEMA)[-1][0]


def pragma(path: Path, name: str) -> Any:
    with sqlite3.connect(path) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


# SQLite specifics


async def test_migrations_set_user_version_and_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "fresh.sqlite3"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        assert pragma(path, "user_version") == LATEST
        assert await store.migrate() == LATEST  # nothing left to run, nothing fails
        await store.insert_user("ada@example.com", "Ada", "hash", time.time())
    finally:
        await store.close()
    again = SQLiteStore(str(path))
    await again.open()  # a restart migrates nothing and keeps the data
    try:
        assert pragma(path, "user_version") == LATEST
        assert (await again.select_user_by_email("ada@example.com")) is not None
    finally:
        await again.close()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"users", "sessions", "throttle", "events"} <= tables


async def test_events_keep_their_rows_and_cascade_across_the_rebuild(tmp_path: Path) -> None:
    """Migration 8 rebuilds `events` (owner made optional): a database from before it keeps
    every event, and deleting an account still deletes its events."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        for number, statements in split_migrations(SCHEMA):
            if number < 8:
                for statement in statements:
                    db.execute(statement)
        db.execute("PRAGMA user_version = 7")
        db.execute(
            "INSERT INTO users (email, name, password_hash, created_at) VALUES ('a@b.co', 'A', 'h', 1)"
        )
        db.execute(
            """INSERT INTO events (user_id, kind, ip, user_agent, created_at, device)
               VALUES (1, 'sign-in', '10.0.0.1', 'agent', 5.0, 'Firefox')"""
        )
    store = SQLiteStore(str(path))
    await store.open()
    try:
        [event] = await store.select_events_of_user(1, 10)
        assert (event.kind, event.ip, event.created_at, event.device) == (
            "sign-in",
            "10.0.0.1",
            5.0,
            "Firefox",
        )
        ghost = FailureEvent("ghost@example.com", "sign-in failed", "10.0.0.1", "agent", "")
        assert (await store.hit_throttles({"k": 9}, 6.0, 60, ghost)).event_id is not None
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM users WHERE id = 1")
        assert db.execute("SELECT user_id, kind FROM events").fetchall() == [
            (None, "sign-in failed")
        ]


async def test_wal_mode_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "wal.sqlite3"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        assert pragma(path, "journal_mode") == "wal"  # WAL is a property of the file
        record = _record("orphan", user_id=424242)
        with pytest.raises(sqlite3.IntegrityError):
            await store.insert_session(record)  # no such user: the writer enforces foreign keys
        assert await store.count_sessions() == 0
    finally:
        await store.close()


async def test_reads_do_not_wait_for_a_write_transaction(tmp_path: Path) -> None:
    path = tmp_path / "readers.sqlite3"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        user = await store.insert_user("ada@example.com", "Ada", "hash", time.time())
        assert user is not None
        # Another process holds the write lock; readers still answer from the WAL snapshot.
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # in rollback-journal mode this would block readers
        try:
            found = await asyncio.wait_for(store.select_user_by_email("ada@example.com"), 5)
            assert found == user
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-- migration 1\nCREATE TABLE a (x);\n", [(1, ["CREATE TABLE a (x)"])]),
        (
            "-- header\n-- migration 1\nCREATE TABLE a (x); -- note\n-- migration 2\nALTER TABLE a ADD y;\nCREATE INDEX i ON a (y);",
            [(1, ["CREATE TABLE a (x)"]), (2, ["ALTER TABLE a ADD y", "CREATE INDEX i ON a (y)"])],
        ),
        ("no migrations at all", []),
    ],
)
def test_split_migrations(text: str, expected: list[tuple[int, list[str]]]) -> None:
    assert split_migrations(text) == expected


def test_schema_migrations_are_numbered_in_order() -> None:
    numbers = [number for number, _ in split_migrations(SCHEMA)]
    assert numbers == list(range(1, len(numbers) + 1))


# The contract, on both engines


def _record(tag: str, user_id: int | None, **changes: Any) -> SessionRecord:
    now = time.time()
    fields: dict[str, Any] = {
        "id": tag,
        "token_hash": tag.encode().ljust(32, b"\0"),
        "user_id": user_id,
        "data": {},
        "remember": False,
        "created_at": now,
        "last_seen": now,
        "expires_at": now + 3600,
        "user_agent": "agent",
        "ip": "127.0.0.1",
    }
    fields.update(changes)
    return SessionRecord(**fields)


@pytest.fixture
def store(app: Quart) -> Store:
    return app.extensions["auth_store"]  # type: ignore[no-any-return]


async def test_insert_user_refuses_a_taken_email(store: Store) -> None:
    first = await store.insert_user("ada@example.com", "Ada", "hash", 1.0)
    assert first is not None and first.email == "ada@example.com"
    assert await store.insert_user("ada@example.com", "Other", "hash2", 2.0) is None
    assert await store.select_user_by_id(first.id) == first
    assert await store.select_user_by_email("nobody@example.com") is None


async def test_foreign_keys_enforced_and_cascade(app: Quart, store: Store) -> None:
    with pytest.raises((sqlite3.IntegrityError, asyncpg.ForeignKeyViolationError)):
        await store.insert_session(_record("orphan", user_id=424242))
    user = await store.insert_user("ada@example.com", "Ada", "hash", 1.0)
    assert user is not None
    await store.insert_session(_record("mine", user.id))
    await store.insert_event(user.id, "sign-in", "127.0.0.1", "agent", 1.0)
    _delete_user(app, user.id)
    assert rows(app, "SELECT count(*) FROM sessions") == [(0,)]
    assert rows(app, "SELECT count(*) FROM events") == [(0,)]


def _delete_user(app: Quart, user_id: int) -> None:
    """Delete a user as an admin would; the schema cascades to sessions and events."""
    if app.config.get("DATABASE_URL"):
        rows(app, "DELETE FROM users WHERE id = ?", user_id)
        return
    with sqlite3.connect(app.config["DATABASE"]) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM users WHERE id = ?", (user_id,))


async def test_session_round_trip_with_user(store: Store) -> None:
    user = await store.insert_user("ada@example.com", "Ada", "hash", 1.0)
    assert user is not None
    record = _record("one", user.id, data={"cart": [1, 2]}, remember=True)
    await store.insert_session(record)
    loaded = await store.select_session_by_hash(record.token_hash)
    assert loaded is not None
    assert loaded.user == user
    assert (loaded.data, loaded.remember, loaded.user_id) == ({"cart": [1, 2]}, True, user.id)
    assert await store.select_session_by_hash(b"\0" * 32) is None


async def test_merge_keeps_other_keys_and_reports_missing_rows(store: Store) -> None:
    record = _record("anon", None, data={"a": 1, "b": 2})
    await store.insert_session(record)
    assert await store.merge_session_data(record.token_hash, {"c": 3}, ["a"], time.time())
    assert await store.merge_session_data(record.token_hash, {"b": 20}, [], time.time())
    loaded = await store.select_session_by_hash(record.token_hash)
    assert loaded is not None and loaded.data == {"b": 20, "c": 3}
    assert not await store.merge_session_data(b"x" * 32, {"c": 3}, [], time.time())


async def test_replace_session_swaps_rows(store: Store) -> None:
    old, new = _record("old", None), _record("new", None)
    await store.insert_session(old)
    await store.replace_session(old.token_hash, new)
    assert await store.select_session_by_hash(old.token_hash) is None
    assert await store.select_session_by_hash(new.token_hash) is not None
    assert await store.count_sessions() == 1


async def test_sessions_of_user_listing_and_revocation(app: Quart, store: Store) -> None:
    user = await store.insert_user("ada@example.com", "Ada", "hash", 1.0)
    other = await store.insert_user("bob@example.com", "Bob", "hash", 1.0)
    assert user is not None and other is not None
    now = time.time()
    await store.insert_session(_record("a", user.id, last_seen=now - 5))
    await store.insert_session(_record("b", user.id, last_seen=now))
    await store.insert_session(_record("dead", user.id, expires_at=now - 1))
    await store.insert_session(_record("bob", other.id))
    listed = await store.select_sessions_of_user(user.id, expiry(app.config, now))
    assert [r.id for r in listed] == ["b", "a"]  # live ones, most recent first
    assert not await store.delete_session_of_user(user.id, "bob")  # not theirs
    assert await store.delete_session_of_user(user.id, "a")
    kept = _record("b", None).token_hash
    assert await store.delete_sessions_of_user(user.id, except_hash=kept) == 1
    assert sorted(r[0] for r in rows(app, "SELECT id FROM sessions")) == ["b", "bob"]


async def test_throttle_counts_in_fixed_windows(store: Store) -> None:
    big = {"k": 100}
    assert await store.hit_throttles(big, 1000.0, 60) == Admission(None)
    await store.hit_throttles(big, 1010.0, 60)
    assert (await store.select_throttle("k", 1020.0, 60))[:2] == (2, 1000.0)
    assert await store.select_throttle("k", 1061.0, 60) is None  # window closed
    await store.hit_throttles(big, 1061.0, 60)  # and restarts
    assert (await store.select_throttle("k", 1061.0, 60))[:2] == (1, 1061.0)
    await store.settle_throttles(["k"], [], None)
    assert await store.select_throttle("k", 1062.0, 60) is None
    await store.hit_throttles({"old": 9}, 1.0, 60)
    assert await store.delete_stale_throttle(500.0, 1000) == 1


async def test_throttle_hits_are_all_or_nothing(store: Store) -> None:
    await store.hit_throttles({"full": 1}, 1000.0, 60)
    admission = await store.hit_throttles({"free": 5, "full": 1}, 1010.0, 60)
    assert admission.retry_after == pytest.approx(50.0)
    assert (await store.select_throttle("full", 1010.0, 60))[:2] == (1, 1000.0)
    assert await store.select_throttle("free", 1010.0, 60) is None  # rolled back too


async def test_failure_event_is_provisional_and_same_for_unknown(store: Store) -> None:
    user = await store.insert_user("ada@example.com", "Ada", "hash", 1.0)
    assert user is not None
    known = FailureEvent("ada@example.com", "sign-in failed", "10.0.0.1", "agent", "Agent")
    unknown = FailureEvent("ghost@example.com", "sign-in failed", "10.0.0.1", "agent", "Agent")
    first = await store.hit_throttles({"a": 9}, 100.0, 60, known)
    assert first.retry_after is None and first.event_id is not None
    ghost = await store.hit_throttles({"b": 9}, 100.0, 60, unknown)  # the same row, no owner
    assert ghost.retry_after is None and ghost.event_id is not None
    second = await store.hit_throttles({"a": 9}, 101.0, 60, known)
    await store.settle_throttles([], ["a"], second.event_id)  # the second one succeeded
    assert [e.kind for e in await store.select_events_of_user(user.id, 10)] == ["sign-in failed"]
    assert await store.delete_ownerless_events(100.5, 10) == 1  # the unknown email's
    assert await store.delete_ownerless_events(1e9, 10) == 0  # never an account's
    assert (await store.select_throttle("a", 101.0, 60))[:2] == (1, 100.0)


async def test_password_change_moves_the_epoch_and_ends_other_sessions(app: Quart) -> None:
    store: Store = app.extensions["auth_store"]
    user = await store.insert_user("ada@example.com", "Ada", "old", 1.0)
    assert user is not None
    await store.insert_session(_record("kept", user.id))
    await store.insert_session(_record("other", user.id))
    kept = _record("kept", user.id).token_hash
    changed = await store.change_user_password(user.id, "new", kept)
    assert changed is not None
    assert (changed.password_hash, changed.epoch) == ("new", user.epoch + 1)
    record = await store.select_session_by_hash(kept)
    assert record is not None and record.epoch == changed.epoch
    assert [r[0] for r in rows(app, "SELECT id FROM sessions")] == ["kept"]
    assert await store.change_user_password(9999, "x", None) is None


async def test_rehash_never_overwrites_a_changed_password(store: Store) -> None:
    user = await store.insert_user("ada@example.com", "Ada", "old-cost", 1.0)
    assert user is not None
    await store.change_user_password(user.id, "new-password", None)
    assert not await store.rehash_user_password(user.id, "old-cost", "old-password-new-cost")
    fresh = await store.select_user_by_id(user.id)
    assert fresh is not None and fresh.password_hash == "new-password"


async def test_purges_delete_in_bounded_batches(store: Store) -> None:
    user = await store.insert_user("ada@example.com", "Ada", "hash", 1.0)
    assert user is not None
    for i in range(5):
        await store.insert_event(user.id, "sign-in", "10.0.0.1", "agent", 10.0 + i)
    await store.insert_event(user.id, "sign-in", "10.0.0.1", "agent", 1000.0)
    assert await store.delete_old_events(100.0, 3) == 3
    assert await store.delete_old_events(100.0, 3) == 2
    assert [e.created_at for e in await store.select_events_of_user(user.id, 9)] == [1000.0]


async def test_events_newest_first_and_limited(store: Store) -> None:
    user = await store.insert_user("ada@example.com", "Ada", "hash", 1.0)
    assert user is not None
    for i, kind in enumerate(["sign-in", "sign-in failed", "sign-out"]):
        await store.insert_event(user.id, kind, "10.0.0.1", "agent", 100.0 + i)
    events = await store.select_events_of_user(user.id, 2)
    assert [e.kind for e in events] == ["sign-out", "sign-in failed"]


async def test_ping(store: Store) -> None:
    await store.ping()
