"""The store on SQLite: `queries.py` on the connections of `sqlite_db.py` (SPEC §8).

Only what SQLite says differently from PostgreSQL is here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from . import Expiry
from .queries import SQLStore
from .sqlite_db import SQLiteDatabase

TOUCH_BATCH = 500  # sessions per UPDATE (well under SQLite's bound-parameter limit)


class SQLiteStore(SQLiteDatabase, SQLStore):
    """Users, sessions, throttling and events in one SQLite file."""

    engine = "sqlite"

    async def merge_session_data(
        self, token_hash: bytes, changed: Mapping[str, Any], removed: list[str], now: float
    ) -> bool:
        """Apply one request's changes to the stored data, keeping other requests' writes.

        SQLite has no JSON-object merge operator that removes keys too, so the row is read
        and written back inside the write transaction (which serialises every writer).
        """
        async with self.transaction() as tx:
            row = await tx.fetch_one(
                "SELECT data FROM sessions WHERE token_hash = :hash", {"hash": token_hash}
            )
            if row is None:
                return False
            data = json.loads(row["data"])
            data.update(changed)
            for key in removed:
                data.pop(key, None)
            await tx.execute(
                "UPDATE sessions SET data = :data, last_seen = :now WHERE token_hash = :hash",
                {"data": json.dumps(data), "now": now, "hash": token_hash},
            )
        return True

    async def touch_sessions(self, token_hashes: Sequence[bytes], now: float) -> None:
        """SQLite binds no arrays: the hashes go in as an IN list, in bounded chunks."""
        for start in range(0, len(token_hashes), TOUCH_BATCH):
            chunk = token_hashes[start : start + TOUCH_BATCH]
            marks = ", ".join("?" * len(chunk))
            await self.execute(
                f"UPDATE sessions SET last_seen = ? WHERE token_hash IN ({marks})", (now, *chunk)
            )

    # The purge's batches: a plain IN (subquery) uses SQLite's indexes, where PostgreSQL needs
    # ORDER BY and = ANY(ARRAY(...)) (see postgres.py).

    async def delete_expired_sessions(self, expiry: Expiry, limit: int) -> int:
        return await self.execute(
            """DELETE FROM sessions WHERE id IN (
                 SELECT id FROM sessions WHERE expires_at <= :now
                 UNION ALL
                 SELECT id FROM sessions
                 WHERE remember = 0 AND last_seen <= :idle_cutoff AND expires_at > :now
                 LIMIT :limit)""",
            {"now": expiry.now, "idle_cutoff": expiry.idle_cutoff, "limit": limit},
        )

    async def delete_stale_throttle(self, cutoff: float, limit: int) -> int:
        return await self.execute(
            """DELETE FROM throttle WHERE key IN (
                 SELECT key FROM throttle WHERE window_start <= :cutoff LIMIT :limit)""",
            {"cutoff": cutoff, "limit": limit},
        )

    async def delete_old_events(self, cutoff: float, limit: int) -> int:
        return await self.execute(
            """DELETE FROM events WHERE id IN (
                 SELECT id FROM events WHERE created_at < :cutoff LIMIT :limit)""",
            {"cutoff": cutoff, "limit": limit},
        )

    async def delete_ownerless_events(self, cutoff: float, limit: int) -> int:
        return await self.execute(
            """DELETE FROM events WHERE id IN (
                 SELECT id FROM events WHERE user_id IS NULL AND created_at < :cutoff
                 LIMIT :limit)""",
            {"cutoff": cutoff, "limit": limit},
        )
