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


def schema(app: Quart) -> dict[str, set[str]]:
    """Every table of the app's database and its columns."""
    if app.config.get("DATABASE_URL"):
        found = rows(
            app,
            """SELECT c.table_name, c.column_name FROM information_schema.columns AS c
               JOIN information_schema.tables AS t
                 ON t.table_schema = c.table_schema AND t.table_name = c.table_name
               WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'""",
        )
    else:
        found = rows(
            app,
            """SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p
               WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'""",
        )
    tables: dict[str, set[str]] = {}
    for table, column in found:
        tables.setdefault(str(table), set()).add(str(column))
    return tables


def row_counts(app: Quart) -> dict[str, int]:
    """How many rows every table of the app's database holds."""
    return {t: rows(app, f"SELECT count(*) FROM {t}")[0][0] for t in schema(app)}  # noqa: S608
