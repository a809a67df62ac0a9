"""PostgreSQL connections: an asyncpg pool shared by every request of one worker (SPEC §9).

The queries live in `queries.py` (and the few PostgreSQL-only ones in `postgres.py`),
written with named parameters (`:name`). Here: the pool, `fetch_all` / `fetch_one` /
`execute` alone or inside `transaction()`, the timeout that turns an unreachable
database into StoreUnavailable (a 503) rather than a hang, the bounded wait for a
database that is restarting (`wait`, DATABASE_WAIT), and the migrations, run
under an advisory lock so nodes starting together migrate once. One connection's
timeouts, its errors and the `:name` to `$n` compilation are in `postgres_connection.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import asyncpg

from . import StoreUnavailable
from .migrations import newest_migration, split_migrations
from .postgres_connection import (
    CLOSE_TIMEOUT,
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    UNAVAILABLE,
    Statements,
    connect,
    unavailable,
)

log = logging.getLogger(__name__)

OPERATION_TIMEOUT = 15.0  # seconds for a whole store call, waiting for the pool included
RETRY_PAUSE = 0.1  # seconds between attempts to reach a database that refused
UNAVAILABLE_OR_STORE: tuple[type[BaseException], ...] = (StoreUnavailable, *UNAVAILABLE)
MIGRATION_LOCK = 0x5155_4155_5448  # pg_advisory_xact_lock key: "QUAUTH"
MAINTENANCE_LOCK = 0x5155_4155_5450  # pg_try_advisory_lock key of the purge: "QUAUTP"


class PostgresDatabase:
    """An asyncpg pool to one PostgreSQL database, migrated before first use."""

    def __init__(self, url: str, pool_size: int = 10, wait: float = 0.0) -> None:
        self.url = url
        self.pool_size = max(1, pool_size)
        # Seconds a store call keeps trying a database that refuses connections (it is
        # restarting) before StoreUnavailable: a restart then delays requests instead of
        # failing them. Only steps that sent nothing, or only reads, are tried again.
        self.wait = max(0.0, min(wait, OPERATION_TIMEOUT / 2))
        self._pool: asyncpg.Pool | None = None
        self._migrated = False
        self._open_lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect and migrate; a database that is down now is retried on first use."""
        try:
            await self._ready()
        except StoreUnavailable as exc:
            log.warning("PostgreSQL unavailable at start (%s); will retry on use", exc)

    async def close(self) -> None:
        """Close the pool (terminating connections that do not close in time)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except (*UNAVAILABLE, asyncpg.PostgresError):
            pool.terminate()

    async def _get_pool(self) -> asyncpg.Pool:
        """The pool, created on first use and again if it was closed."""
        pool = self._pool
        if pool is not None and not pool.is_closing():
            return pool
        async with self._open_lock:
            if self._pool is None or self._pool.is_closing():
                try:
                    self._pool = await asyncio.wait_for(
                        asyncpg.create_pool(
                            self.url,
                            min_size=1,
                            max_size=self.pool_size,
                            timeout=CONNECT_TIMEOUT,
                            command_timeout=COMMAND_TIMEOUT,
                            server_settings={"application_name": "quart_auth_app"},
                        ),
                        OPERATION_TIMEOUT,
                    )
                except UNAVAILABLE as exc:
                    raise unavailable(exc) from exc
            return self._pool

    async def _ready(self) -> asyncpg.Pool:
        pool = await self._get_pool()
        if not self._migrated:
            await self.migrate()
        return pool

    def _deadline(self, wait: bool = True) -> float:
        return asyncio.get_running_loop().time() + (self.wait if wait else 0.0)

    async def _pause_until(self, deadline: float) -> bool:
        """Sleep a moment before another attempt; False when `deadline` leaves no time."""
        if asyncio.get_running_loop().time() + RETRY_PAUSE > deadline:
            return False
        await asyncio.sleep(RETRY_PAUSE)
        return True

    async def _acquire(self, migrated: bool, deadline: float) -> tuple[asyncpg.Pool, Any]:
        """The pool and one of its connections, tried again until `deadline` while the
        database refuses: nothing has been sent on the connection yet."""
        while True:
            try:
                pool = await (self._ready() if migrated else self._get_pool())
                return pool, await pool.acquire()
            except UNAVAILABLE_OR_STORE:
                if not await self._pause_until(deadline):
                    raise

    @asynccontextmanager
    async def _connection(
        self, migrated: bool = True, deadline: float | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; connection faults and timeouts become StoreUnavailable."""
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT):
                pool, db = await self._acquire(migrated, deadline or self._deadline())
                try:
                    yield db
                finally:
                    await pool.release(db)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def _fetch(
        self, sql: str, params: Mapping[str, Any], one: bool, wait: bool = True
    ) -> Any:
        """Rows of one statement. A SELECT whose connection broke is tried again until the
        wait runs out; any other statement (an UPDATE ... RETURNING) only if nothing was sent."""
        deadline = self._deadline(wait)
        again = sql.lstrip()[:6].upper() == "SELECT"
        while True:
            try:
                async with self._connection(deadline=deadline) as db:
                    statements = Statements(db)
                    if one:
                        return await statements.fetch_one(sql, params)
                    return await statements.fetch_all(sql, params)
            except StoreUnavailable:
                if not (again and await self._pause_until(deadline)):
                    raise

    @asynccontextmanager
    async def maintenance(self) -> AsyncIterator[bool]:
        """Yield True while this process holds the maintenance lock, False if another does.

        A session advisory lock, so one process across every node purges at a time and the
        others skip the round. It lives on a connection of its own, outside the pool: the
        work needs pooled connections (a pool of one would deadlock) and may outlast
        OPERATION_TIMEOUT, which bounds only taking the lock here.
        """
        await self._ready()
        db = await connect(self.url, "quart_auth_app maintenance")
        try:
            try:
                mine = bool(await db.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK))
            except UNAVAILABLE as exc:
                raise unavailable(exc) from exc
            yield mine
        finally:
            # Ending the session releases the lock.
            try:
                await db.close(timeout=CLOSE_TIMEOUT)
            except (*UNAVAILABLE, asyncpg.PostgresError):
                db.terminate()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Statements]:
        """A transaction on one pooled connection: committed on leaving, rolled back on error."""
        async with self._connection() as db, db.transaction():
            yield Statements(db)

    async def fetch_all(self, sql: str, params: Mapping[str, Any] = {}) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._fetch(sql, params, one=False)
        return rows

    async def fetch_one(self, sql: str, params: Mapping[str, Any] = {}) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._fetch(sql, params, one=True)
        return row

    async def execute(self, sql: str, params: Mapping[str, Any] = {}) -> int:
        async with self._connection() as db:
            return await Statements(db).execute(sql, params)

    async def migrate(self) -> int:
        """Run the migrations past the recorded version, once across every node; return it."""
        text = resources.files("quart_auth_app").joinpath("sql/postgres.sql").read_text()
        async with self._connection(migrated=False) as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await db.execute(
                """CREATE TABLE IF NOT EXISTS schema_version (
                       version    INTEGER PRIMARY KEY,
                       applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
            )
            version = int(await db.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
            for number, statements in split_migrations(text):
                if number <= version:
                    continue
                for statement in statements:
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
                version = number
        self._migrated = True
        return version

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers now (health checks never wait)."""
        await self._fetch("SELECT 1", {}, one=True, wait=False)

    async def schema_version(self) -> tuple[int, int]:
        """The highest version in `schema_version`, and the newest in sql/postgres.sql (now:
        readiness checks never wait)."""
        sql = "SELECT coalesce(max(version), 0) FROM schema_version"
        row = await self._fetch(sql, {}, one=True, wait=False)
        return int(row[0]) if row else 0, newest_migration("postgres.sql")
