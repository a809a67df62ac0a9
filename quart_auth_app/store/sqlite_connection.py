"""One connection to the SQLite file, and statements run on it to completion (SPEC §8).

aiosqlite runs each connection on a thread of its own. The file is opened here on a
worker thread and only then handed to aiosqlite: when the open fails inside aiosqlite,
it stops that thread without waiting for it, and the thread later calls back into the
event loop, which may be closed by then (it failed the suite now and then). Handed an
open connection, aiosqlite's start cannot fail, and `close()` waits for the thread to
stop, so no thread outlives its connection, however the opening ends.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from typing import Any

import aiosqlite

BUSY_TIMEOUT_MS = 30_000
ITER_CHUNK_SIZE = 64  # rows per trip when a cursor is iterated: aiosqlite.connect's default


async def connect(path: str) -> aiosqlite.Connection:
    """A connection to the file `path` in autocommit mode, with the store's pragmas set."""
    # check_same_thread off: opened on a worker thread, used on aiosqlite's thread alone.
    raw = await asyncio.to_thread(
        sqlite3.connect, path, isolation_level=None, check_same_thread=False
    )
    db = await aiosqlite.Connection(lambda: raw, ITER_CHUNK_SIZE)
    db.row_factory = sqlite3.Row
    try:
        await execute(db, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await execute(db, "PRAGMA foreign_keys = ON")
        # FULL: a commit is on disk before the response says so (SPEC §8).
        await execute(db, "PRAGMA synchronous = FULL")
    except BaseException:
        await db.close()  # its thread would otherwise keep the process from exiting
        raise
    return db


async def execute(db: aiosqlite.Connection, sql: str, params: Mapping[str, Any] = {}) -> int:
    """Execute one statement to completion and release it; return the rows changed.

    A cursor left open keeps its statement active, and an active statement
    holds SQLite locks, so every statement here is closed at once.
    """
    async with db.execute(sql, params) as cursor:
        await cursor.fetchall()
        return cursor.rowcount


class Transaction:
    """Statements inside a write transaction, on the writer connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def fetch_all(self, sql: str, params: Mapping[str, Any] = {}) -> list[sqlite3.Row]:
        async with self.db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetch_one(self, sql: str, params: Mapping[str, Any] = {}) -> sqlite3.Row | None:
        rows = await self.fetch_all(sql, params)  # to the end: the statement is then done
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Mapping[str, Any] = {}) -> int:
        return await execute(self.db, sql, params)
