"""What the writer connection does to the whole SQLite file, one process at a time.

At open, under `<db>.lock`, the file is switched to WAL and migrated; after a purge,
under `<db>.purge.lock`, its WAL is emptied. WAL lets the readers read while the one
writer writes (SPEC §8); a WAL grows with the transactions written between
checkpoints and, left alone, keeps its largest size.
"""

from __future__ import annotations

import logging
import sqlite3
from importlib import resources

import aiosqlite

from .migrations import split_migrations
from .sqlite_connection import BUSY_TIMEOUT_MS, execute

JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a checkpointed WAL is cut back to (SPEC §8)
CHECKPOINT_BUSY_MS = 250  # longest a WAL truncation holds writers up, waiting for old readers

log = logging.getLogger(__name__)


async def use_wal(db: aiosqlite.Connection) -> None:
    """Switch the file to WAL mode, its checkpointed log cut back to JOURNAL_SIZE_LIMIT."""
    await execute(db, "PRAGMA journal_mode = WAL")
    # Without it a WAL, once grown by a large transaction, never shrank back.
    await execute(db, f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")


async def apply_migrations(db: aiosqlite.Connection) -> int:
    """Run the schema's migrations past `PRAGMA user_version`; return the new version.

    `db` is the writer, inside a write transaction.
    """
    text = resources.files("quart_auth_app").joinpath("sql/sqlite.sql").read_text()
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


async def truncate_wal(db: aiosqlite.Connection, path: str) -> None:
    """Checkpoint the WAL and cut it to zero bytes, unless readers hold it past a short wait.

    `db` is the writer, under the write lock. TRUNCATE holds SQLite's write lock while it
    waits for readers of older snapshots, so the wait is kept short; a WAL left long then
    is trimmed to JOURNAL_SIZE_LIMIT later, by the first write after a checkpoint that
    caught up.
    """
    try:
        await execute(db, f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
        await execute(db, "PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.warning("WAL checkpoint of %s skipped: %s", path, exc)
    finally:
        await execute(db, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
