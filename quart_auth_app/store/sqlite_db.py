"""SQLite connections: WAL, one serialised writer connection, separate readers (SPEC §8).

The queries live in `queries.py` (and the few SQLite-only ones in `sqlite.py`); this
module opens and migrates the file and runs statements on its connections, the way
quart-db's aiosqlite backend does: `fetch_all`, `fetch_one` and `execute`, alone or
inside `transaction()`. Opening one connection is in `sqlite_connection.py`; WAL mode,
migrations and WAL truncation, run on the writer, are in `sqlite_upkeep.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiosqlite

from . import StoreUnavailable
from .files import exclusive, own_files, try_flock
from .migrations import newest_migration
from .sqlite_batch import BatchedReads
from .sqlite_connection import Transaction, connect, execute
from .sqlite_upkeep import apply_migrations, truncate_wal, use_wal

READERS = 2

log = logging.getLogger(__name__)


class SQLiteDatabase:
    """The connections to one SQLite file: the serialised writer path and the readers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = 0
        self._reads = BatchedReads(self._reader)
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()

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
                    opened.append(await connect(self.path))
                    await use_wal(opened[0])
                    opened += [await connect(self.path) for _ in range(READERS)]
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
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction (BEGIN IMMEDIATE): committed on leaving, rolled back on error."""
        async with self._write() as db:
            yield Transaction(db)

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
        try:
            # Executed and fetched on a reader's thread with the other reads of this loop
            # turn, in one trip (sqlite_batch.py); the statement is exhausted, so it holds no
            # read snapshot afterwards.
            return await self._reads.fetch_all(sql, params)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _reader(self) -> aiosqlite.Connection:
        """The reader connections in turn, a trip each (ValueError once closed)."""
        if not self._readers:
            raise ValueError("the database is closed")
        self._next_reader = (self._next_reader + 1) % len(self._readers)
        return self._readers[self._next_reader]

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
            db = await self._writer_db()
            async with self._write_lock:
                await truncate_wal(db, self.path)
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    async def migrate(self) -> int:
        """Run the schema's migrations past `PRAGMA user_version`; return the new version."""
        async with self._write() as db:
            return await apply_migrations(db)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        await self.fetch_all("SELECT 1")

    async def schema_version(self) -> tuple[int, int]:
        """The file's `user_version`, and the newest migration in sql/sqlite.sql."""
        row = await self.fetch_one("PRAGMA user_version")
        return int(row[0]) if row else 0, newest_migration("sqlite.sql")
