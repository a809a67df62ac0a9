"""What the store's queries run on: an engine's three calls, alone or in a transaction.

Both engines (`sqlite_db.py`, `postgres_db.py`) provide them, the way quart-db draws
the line: `fetch_all`, `fetch_one` and `execute` run one statement each (reads on
their own connections), and `transaction()` gives the same three calls inside one
transaction, committed on leaving and rolled back on an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class Queries(Protocol):
    """What an engine runs statements with, outside a transaction or inside one."""

    async def fetch_all(self, sql: str, params: Mapping[str, Any] = ...) -> list[Any]: ...
    async def fetch_one(self, sql: str, params: Mapping[str, Any] = ...) -> Any | None: ...
    async def execute(self, sql: str, params: Mapping[str, Any] = ...) -> int: ...


class Engine(Queries):
    """The engine an engine-independent query class is mixed with."""

    def transaction(self) -> AbstractAsyncContextManager[Queries]:
        raise NotImplementedError
