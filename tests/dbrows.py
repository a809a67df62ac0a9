"""Read a test app's database directly, on either engine, as a second process would.

Write SQL with `?` placeholders; for PostgreSQL they become `$1, $2, ...`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import sqlite3
from typing import Any

import asyncpg
from quart import Quart


def _numbered(sql: str) -> str:
    counter = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


async def _pg_rows(url: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    db = await asyncpg.connect(url, timeout=10)
    try:
        return [tuple(row) for row in await db.fetch(_numbered(sql), *params)]
    finally:
        await db.close()


def rows(app: Quart, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the app's database in its own connection; return the rows."""
    url = app.config.get("DATABASE_URL")
    if url:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _pg_rows(url, sql, params)).result()
    with sqlite3.connect(app.config["DATABASE"]) as db:
        return db.execute(sql, params).fetchall()


async def settle(app: Quart) -> None:
    """Let the app's queued last_seen writes land, before a test edits the rows under it."""
    await app.extensions["auth_touches"].flush()
