"""Reads of one event-loop turn share a trip to a reader's thread, each with its own outcome."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from quart_auth_app.store import sqlite_batch
from quart_auth_app.store.sqlite_db import READERS, SQLiteDatabase


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteDatabase]:
    database = SQLiteDatabase(str(tmp_path / "app.sqlite3"))
    await database.open()
    yield database
    await database.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[tuple[sqlite3.Connection, int]]:
    """Each trip's connection and number of reads, as the reader's thread runs it."""
    seen: list[tuple[sqlite3.Connection, int]] = []
    run = sqlite_batch._run

    def counted(connection: sqlite3.Connection, reads: Sequence[Any]) -> list[Any]:
        seen.append((connection, len(reads)))
        return run(connection, reads)

    monkeypatch.setattr(sqlite_batch, "_run", counted)
    return seen


async def test_reads_of_one_turn_go_in_one_trip_and_each_gets_its_rows(
    db: SQLiteDatabase, trips: list[tuple[sqlite3.Connection, int]]
) -> None:
    rows = await asyncio.gather(*(db.fetch_one("SELECT ? AS n", (n,)) for n in range(50)))
    assert [row["n"] for row in rows if row is not None] == list(range(50))
    assert [count for _, count in trips] == [50]


async def test_turn_after_turn_the_trips_take_the_readers_in_turn(
    db: SQLiteDatabase, trips: list[tuple[sqlite3.Connection, int]]
) -> None:
    for _ in range(2 * READERS):
        await asyncio.gather(db.fetch_all("SELECT 1"), db.fetch_all("SELECT 2"))
    assert len(trips) == 2 * READERS
    assert len({id(connection) for connection, _ in trips}) == READERS


async def test_a_read_that_fails_fails_alone(db: SQLiteDatabase) -> None:
    good, bad, also_good = await asyncio.gather(
        db.fetch_one("SELECT 1 AS n"),
        db.fetch_one("SELECT ? AS n", (1, 2)),  # one parameter too many
        db.fetch_one("SELECT 3 AS n"),
        return_exceptions=True,
    )
    assert isinstance(bad, sqlite3.ProgrammingError)
    assert isinstance(good, sqlite3.Row) and good["n"] == 1
    assert isinstance(also_good, sqlite3.Row) and also_good["n"] == 3


async def test_a_cancelled_reader_leaves_the_others_their_rows(
    db: SQLiteDatabase, trips: list[tuple[sqlite3.Connection, int]]
) -> None:
    gone = asyncio.ensure_future(db.fetch_one("SELECT 1 AS n"))
    kept = asyncio.ensure_future(db.fetch_one("SELECT 2 AS n"))
    await asyncio.sleep(0)  # both queued in this turn
    gone.cancel()
    row = await kept
    assert row is not None and row["n"] == 2
    assert gone.cancelled() and [count for _, count in trips] == [2]


async def test_a_trip_that_cannot_start_fails_each_of_its_reads(
    db: SQLiteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    def closed() -> None:
        raise ValueError("Connection closed")  # what aiosqlite says once closed

    monkeypatch.setattr(db._reads, "_pick", closed)
    outcomes = await asyncio.gather(
        *(db.fetch_all("SELECT 1") for _ in range(3)), return_exceptions=True
    )
    assert [str(o) for o in outcomes] == ["Connection closed"] * 3
