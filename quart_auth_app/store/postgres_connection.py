"""One PostgreSQL connection: its timeouts, the errors that mean "not there", `$n` binds.

Queries are written with named parameters (`:name`); `compiled` turns them into
PostgreSQL's `$n` and the names into the argument order, once per statement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import asyncpg

from . import StoreUnavailable

CONNECT_TIMEOUT = 5.0  # seconds to open one connection
COMMAND_TIMEOUT = 10.0  # seconds for one statement
CLOSE_TIMEOUT = 5.0

# Errors that mean "the database is not there right now", never "the query is wrong".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.InterfaceError,  # connection closed under us
    # "cannot switch to state ...; another operation is in progress": a connection the
    # server dropped mid-statement, failing again as the pool resets it (asyncpg 0.30).
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")  # :name, not a ::cast


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The StoreUnavailable (a 503) that one of the UNAVAILABLE errors becomes."""
    return StoreUnavailable(f"PostgreSQL: {exc!r}")


async def connect(url: str, application_name: str) -> asyncpg.Connection:
    """A connection of its own, outside any pool, with the pool's timeouts."""
    try:
        return await asyncpg.connect(
            url,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            server_settings={"application_name": application_name},
        )
    except UNAVAILABLE as exc:
        raise unavailable(exc) from exc


def rows_changed(status: str) -> int:
    """The row count of a command status such as 'DELETE 3'."""
    return int(status.rsplit(" ", 1)[-1])


@lru_cache(maxsize=256)
def compiled(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with `:name` parameters as PostgreSQL's `$n`, and the names in `$n` order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return NAMED.sub(number, sql), tuple(names)


def _args(sql: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    text, names = compiled(sql)
    return text, [params[name] for name in names]


class Statements:
    """Statements on one connection, inside a transaction or (one each) outside one."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db

    async def fetch_all(self, sql: str, params: Mapping[str, Any] = {}) -> list[asyncpg.Record]:
        text, args = _args(sql, params)
        return list(await self.db.fetch(text, *args))

    async def fetch_one(self, sql: str, params: Mapping[str, Any] = {}) -> asyncpg.Record | None:
        text, args = _args(sql, params)
        return await self.db.fetchrow(text, *args)

    async def execute(self, sql: str, params: Mapping[str, Any] = {}) -> int:
        text, args = _args(sql, params)
        return rows_changed(await self.db.execute(text, *args))
