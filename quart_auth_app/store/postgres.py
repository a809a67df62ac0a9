"""The store on PostgreSQL: `queries.py` on the pool of `postgres_db.py` (SPEC §9).

Several nodes share the database, so nothing is serialised in the app: unique
constraints, `INSERT ... ON CONFLICT` and single-statement updates carry the
atomicity that SQLite gets from its one writer. Only what PostgreSQL says
differently from SQLite is here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from . import EmailTaken, Expiry, NewEvent, Outgoing, User
from .postgres_db import PostgresDatabase
from .queries import SQLStore


class PostgresStore(PostgresDatabase, SQLStore):
    """Users, sessions, throttling and events in one PostgreSQL database."""

    engine = "postgresql"

    # Several nodes claim mail at once: a row another sender's claim holds is skipped, not
    # waited for (SQLite's single writer needs nothing, so says nothing).
    CLAIM_LOCK = "FOR UPDATE SKIP LOCKED"

    async def change_email(
        self, token_hash: bytes, now: float, event: NewEvent, old_address_mail: Outgoing
    ) -> User | None:
        """As on SQLite; but a sign-up for the new address may commit between the check and
        the UPDATE (no single writer here), and the unique index then refuses the UPDATE."""
        try:
            return await super().change_email(token_hash, now, event, old_address_mail)
        except asyncpg.UniqueViolationError as exc:
            raise EmailTaken(str(exc)) from exc

    async def merge_session_data(
        self, token_hash: bytes, changed: Mapping[str, Any], removed: list[str], now: float
    ) -> bool:
        """Apply one request's changes in one UPDATE (jsonb merge and key removal), keeping
        other requests' writes; SQLite reads and writes the row back instead."""
        count = await self.execute(
            """UPDATE sessions SET data = (data || :changed::jsonb) - :removed::text[],
                                   last_seen = :now
               WHERE token_hash = :hash""",
            {
                "hash": token_hash,
                "changed": json.dumps(dict(changed)),
                "removed": list(removed),
                "now": now,
            },
        )
        return count > 0

    async def touch_sessions(self, token_hashes: Sequence[bytes], now: float) -> None:
        """One statement for the whole batch, the hashes bound as one array."""
        await self.execute(
            "UPDATE sessions SET last_seen = :now WHERE token_hash = ANY(:hashes::bytea[])",
            {"now": now, "hashes": list(token_hashes)},
        )

    # The purge's batches pick rows in index order and delete by primary key through
    # `= ANY(ARRAY(...))`: without ORDER BY the planner scanned the table for the rows past
    # the cutoff (30 ms a batch behind 300k live rows), and with IN it joined by scanning all
    # of throttle (110 ms a batch). SQLite's plain IN (subquery) uses its indexes.

    async def delete_expired_sessions(self, expiry: Expiry, limit: int) -> int:
        return await self.execute(
            """DELETE FROM sessions WHERE id = ANY(ARRAY(
                 (SELECT id FROM sessions WHERE expires_at <= :now
                  ORDER BY expires_at LIMIT :limit)
                 UNION ALL
                 (SELECT id FROM sessions
                  WHERE NOT remember AND last_seen <= :idle_cutoff AND expires_at > :now
                  ORDER BY last_seen LIMIT :limit)
                 LIMIT :limit))""",
            {"now": expiry.now, "idle_cutoff": expiry.idle_cutoff, "limit": limit},
        )

    async def delete_stale_throttle(self, cutoff: float, limit: int) -> int:
        return await self.execute(
            """DELETE FROM throttle WHERE key = ANY(ARRAY(
                 SELECT key FROM throttle WHERE window_start <= :cutoff
                 ORDER BY window_start LIMIT :limit))""",
            {"cutoff": cutoff, "limit": limit},
        )

    async def delete_old_events(self, cutoff: float, limit: int) -> int:
        return await self.execute(
            """DELETE FROM events WHERE id = ANY(ARRAY(
                 SELECT id FROM events WHERE created_at < :cutoff
                 ORDER BY created_at LIMIT :limit))""",
            {"cutoff": cutoff, "limit": limit},
        )

    async def delete_ownerless_events(self, cutoff: float, limit: int) -> int:
        return await self.execute(
            """DELETE FROM events WHERE id = ANY(ARRAY(
                 SELECT id FROM events WHERE user_id IS NULL AND created_at < :cutoff
                 ORDER BY created_at LIMIT :limit))""",
            {"cutoff": cutoff, "limit": limit},
        )
