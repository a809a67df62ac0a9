"""SQLite connections: WAL, one serialised writer connection, separate readers (SPEC §8).

The queries live in `queries.py` (and the few SQLite-only ones in `sqlite.py`); this
module opens, migrates and runs statements on the connections, the way quart-db's
aiosqlite backend does: `fetch_all`, `fetch_one` and `execute`, alone or inside
`transaction()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from importlib import resources
from typing import Any

import aiosqlite

from . import StoreUnavailable
from .files import exclusive, own_files, try_flock
from .migrations import split_migrations

BUSY_TIMEOUT_MS = 30_000
READERS = 2
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a checkpointed WAL is cut back to (SPEC §8)
CHECKPOINT_BUSY_MS = 250  # longest a WAL truncation holds writers up, waiting for old readers

log = logging.getLogger(__name__)


async def execute(db: aiosqlite.Connection, sql: str, params: Mapping[str, Any] = {}) -> int:
    """Execute one statement to completion and release it; return the rows changed.

    A cursor left open keeps its statement active, and an active statement
    holds SQLite locks, so every statement here is closed at once.
    """
    async with db.execute(sql, params) as cursor:
        await cursor.fetchall()
        return cursor.rowcount


class _Transaction:
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


class SQLiteDatabase:
    """The connections to one SQLite file: the serialised writer path and the readers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = 0
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        connection = aiosqlite.connect(self.path, isolation_level=None)
        try:
            db = await connection
        except sqlite3.Error:
            # On a failed connect aiosqlite stops its thread without waiting, and the thread
            # later calls back into this loop, which may be closed by then: wait for it here.
            await asyncio.to_thread(connection._thread.join, 5.0)
            raise
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

    async def open(self) -> None:
        """Connect and migrate once per process; later calls are no-ops.

        Creating the file, switching it to WAL and migrating happen under a lock file
        beside the database, one process at a time: workers starting together raced to
        switch to WAL, and SQLite answers the loser "database is locked" at once, without
        its busy timeout, where waiting could deadlock. On any failure every connection is
        closed: an aiosqlite thread left running kept a failed worker alive and idle, so
        Hypercorn never saw it die.
        """
        async with self._open_lock:
            if self._writer is not None:
                return
            opened: list[aiosqlite.Connection] = []
            try:
                async with exclusive(f"{self.path}.lock"):
                    await asyncio.to_thread(own_files, self.path)
                    opened.append(await self._connect())
                    await execute(opened[0], "PRAGMA journal_mode = WAL")
                    # Without it a WAL, once grown by a large transaction, never shrank back.
                    await execute(opened[0], f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
                    opened += [await self._connect() for _ in range(READERS)]
                    self._writer, self._readers = opened[0], opened[1:]
                    await self.migrate()
            except BaseException as exc:
                self._writer, self._readers = None, []
                for db in opened:
                    with suppress(sqlite3.Error):
                        await db.close()
                if not isinstance(exc, (sqlite3.Error, OSError, StoreUnavailable)):
                    raise
                log.error("cannot open the database %s: %s", self.path, exc)
                if isinstance(exc, StoreUnavailable):
                    raise
                raise StoreUnavailable(str(exc)) from exc

    async def close(self) -> None:
        """Close every connection."""
        for db in [self._writer, *self._readers]:
            if db is not None:
                await db.close()
        self._writer, self._readers = None, []

    async def _writer_db(self) -> aiosqlite.Connection:
        """The writer connection, opening the store on first use."""
        if self._writer is None:
            await self.open()
        if self._writer is None:  # closed again while it opened
            raise StoreUnavailable("the database is closed")
        return self._writer

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """The one writer path: a process-wide lock, then BEGIN IMMEDIATE across processes."""
        db = await self._writer_db()
        async with self._write_lock:
            try:
                await execute(db, "BEGIN IMMEDIATE")
            except BaseException as exc:
                # A request cancelled mid-await (its client hung up) does not stop the BEGIN
                # queued on aiosqlite's thread: without this rollback (queued behind it) the
                # transaction stays open and every later write fails "within a transaction".
                await db.rollback()
                if isinstance(exc, sqlite3.Error):
                    raise StoreUnavailable(str(exc)) from exc
                raise
            try:
                yield db
            except sqlite3.OperationalError as exc:  # disk, I/O, lock: nothing is written
                await db.rollback()
                raise StoreUnavailable(str(exc)) from exc
            except BaseException:
                await db.rollback()
                raise
            try:
                await db.commit()
            except sqlite3.Error as exc:
                await db.rollback()
                raise StoreUnavailable(str(exc)) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Transaction]:
        """A write transaction (BEGIN IMMEDIATE): committed on leaving, rolled back on error."""
        async with self._write() as db:
            yield _Transaction(db)

    async def execute(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = {}) -> int:
        """One write statement as its own transaction; return the rows it changed.

        SQLite runs a lone write statement in autocommit mode as BEGIN IMMEDIATE would (the
        write lock is taken before it reads, waiting out the busy timeout), and the write is
        done within the one trip to the writer's thread that executes it, so the lock between
        workers is not held across several turns of a busy event loop: under load that made
        the once-a-minute last_seen write take seconds.
        """
        db = await self._writer_db()
        async with self._write_lock:
            try:
                cursor = await db.execute(sql, params)
                changed = cursor.rowcount
                await cursor.close()
            except sqlite3.OperationalError as exc:  # disk, I/O, lock; a broken rule propagates
                raise StoreUnavailable(str(exc)) from exc
        return changed

    async def fetch_all(
        self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()
    ) -> list[sqlite3.Row]:
        """The rows of one read, on a reader connection (never waits for writers)."""
        if not self._readers:
            await self.open()
        self._next_reader = (self._next_reader + 1) % len(self._readers)
        try:
            # One trip to the connection's thread (execute + fetchall there), not three; the
            # statement is exhausted, so it holds no read snapshot afterwards.
            return list(await self._readers[self._next_reader].execute_fetchall(sql, params))
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def fetch_one(
        self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()
    ) -> sqlite3.Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    @asynccontextmanager
    async def maintenance(self) -> AsyncIterator[bool]:
        """Yield True while this process holds the maintenance lock, False if another does.

        A flock on `<db>.purge.lock` lets one worker sharing the file purge at a time; the
        others skip the round instead of queueing behind it. Leaving, the holder truncates
        the WAL its deletes grew.
        """
        fd = await asyncio.to_thread(try_flock, f"{self.path}.purge.lock")
        if fd is None:
            yield False
            return
        try:
            yield True
            await self._truncate_wal()
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    async def _truncate_wal(self) -> None:
        """Checkpoint the WAL and cut it to zero bytes, unless readers hold it past a short wait.

        TRUNCATE holds the write lock while it waits for readers of older snapshots, so the
        wait is kept short; a WAL left long then is trimmed to JOURNAL_SIZE_LIMIT later, by
        the first write after a checkpoint that caught up.
        """
        db = await self._writer_db()
        async with self._write_lock:
            try:
                await execute(db, f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
                await execute(db, "PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint of %s skipped: %s", self.path, exc)
            finally:
                await execute(db, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    async def migrate(self) -> int:
        """Run the schema's migrations past `PRAGMA user_version`; return the new version."""
        text = resources.files("quart_auth_app").joinpath("sql/sqlite.sql").read_text()
        async with self._write() as db:
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            for number, statements in split_migrations(text):
                if number <= version:
                    continue
                for statement in statements:
                    await execute(db, statement)
                version = number
                await execute(db, f"PRAGMA user_version = {number}")
        return version

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        await self.fetch_all("SELECT 1")
