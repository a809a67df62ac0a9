"""PostgreSQL engine: every query of the store, on the pool of `postgres_db` (SPEC §9).

Several nodes share the database, so nothing is serialised in the app: unique
constraints, `INSERT ... ON CONFLICT` and single-statement updates carry the
atomicity that SQLite gets from its one writer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from . import Admission, Event, Expiry, FailureEvent, SessionRecord, ThrottleState, User
from .postgres_db import PostgresDatabase, rows_changed

SESSION_COLUMNS = """
    s.id, s.token_hash, s.user_id, s.data, s.remember, s.created_at, s.last_seen,
    s.expires_at, s.user_agent, s.ip, s.epoch, s.device,
    u.email AS u_email, u.name AS u_name, u.password_hash AS u_password_hash,
    u.created_at AS u_created_at, u.epoch AS u_epoch
"""
USER_COLUMNS = "id, email, name, password_hash, created_at, epoch"

INSERT_SESSION = """
    INSERT INTO sessions (id, token_hash, user_id, data, remember, created_at,
                          last_seen, expires_at, user_agent, ip, epoch, device)
    VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, $12)
"""


def _user(row: asyncpg.Record) -> User:
    return User(
        row["id"], row["email"], row["name"], row["password_hash"], row["created_at"], row["epoch"]
    )


def _session(row: asyncpg.Record) -> SessionRecord:
    user = None
    if row["user_id"] is not None:
        user = User(
            row["user_id"],
            row["u_email"],
            row["u_name"],
            row["u_password_hash"],
            row["u_created_at"],
            row["u_epoch"],
        )
    return SessionRecord(
        id=row["id"],
        token_hash=bytes(row["token_hash"]),
        user_id=row["user_id"],
        data=json.loads(row["data"]),
        remember=bool(row["remember"]),
        created_at=row["created_at"],
        last_seen=row["last_seen"],
        expires_at=row["expires_at"],
        user_agent=row["user_agent"],
        ip=row["ip"],
        epoch=row["epoch"],
        device=row["device"],
        user=user,
    )


def _session_args(record: SessionRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.token_hash,
        record.user_id,
        json.dumps(record.data),
        record.remember,
        record.created_at,
        record.last_seen,
        record.expires_at,
        record.user_agent,
        record.ip,
        record.epoch,
        record.device,
    )


HIT_THROTTLE = """
    INSERT INTO throttle AS t (key, count, window_start, last_hit) VALUES ($1, 1, $2, $2)
    ON CONFLICT (key) DO UPDATE SET
      count = CASE WHEN t.window_start <= $3 THEN 1 ELSE t.count + 1 END,
      window_start = CASE WHEN t.window_start <= $3 THEN $2 ELSE t.window_start END,
      last_hit = $2
    RETURNING count, window_start
"""


# A user's events past the newest `keep` (SPEC §7: events bounded per user, not only in time).
TRIM_EVENTS = """
    DELETE FROM events WHERE id IN (
      SELECT id FROM events WHERE user_id = {user}
      ORDER BY created_at DESC, id DESC OFFSET $2)
"""


class PostgresStore(PostgresDatabase):
    """Users, sessions, throttling and events in one PostgreSQL database."""

    engine = "postgresql"
    events_per_user = 1000

    # users

    async def insert_user(
        self, email: str, name: str, password_hash: str, now: float
    ) -> User | None:
        """Create a user; None when the email is taken (the unique index decides)."""
        rows = await self._fetch(
            f"""INSERT INTO users (email, name, password_hash, created_at)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (email) DO NOTHING
                RETURNING {USER_COLUMNS}""",
            email,
            name,
            password_hash,
            now,
        )
        return _user(rows[0]) if rows else None

    async def select_user_by_email(self, email: str) -> User | None:
        if "\x00" in email:  # PostgreSQL text cannot hold NUL, so no row can match
            return None
        rows = await self._fetch(f"SELECT {USER_COLUMNS} FROM users WHERE email = $1", email)
        return _user(rows[0]) if rows else None

    async def select_user_by_id(self, user_id: int) -> User | None:
        rows = await self._fetch(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return _user(rows[0]) if rows else None

    async def rehash_user_password(self, user_id: int, old_hash: str, new_hash: str) -> bool:
        """Store the same password at a new cost, unless the password changed meanwhile."""
        changed = await self._execute(
            "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
            new_hash,
            user_id,
            old_hash,
        )
        return changed > 0

    async def change_user_password(
        self, user_id: int, password_hash: str, keep_hash: bytes | None
    ) -> User | None:
        """New password and epoch; every session but `keep_hash` ends, that one moves on."""
        async with self._connection() as db, db.transaction():
            row = await db.fetchrow(
                f"""UPDATE users SET password_hash = $1, epoch = epoch + 1 WHERE id = $2
                    RETURNING {USER_COLUMNS}""",
                password_hash,
                user_id,
            )
            if row is None:
                return None
            user = _user(row)
            await db.execute(
                """DELETE FROM sessions WHERE user_id = $1
                   AND ($2::bytea IS NULL OR token_hash <> $2::bytea)""",
                user_id,
                keep_hash,
            )
            await db.execute(
                "UPDATE sessions SET epoch = $1 WHERE token_hash = $2", user.epoch, keep_hash
            )
        return user

    # sessions

    async def select_session_by_hash(self, token_hash: bytes) -> SessionRecord | None:
        rows = await self._fetch(
            f"""SELECT {SESSION_COLUMNS} FROM sessions AS s
                LEFT JOIN users AS u ON u.id = s.user_id
                WHERE s.token_hash = $1""",
            token_hash,
        )
        return _session(rows[0]) if rows else None

    async def insert_session(self, record: SessionRecord) -> None:
        await self._execute(INSERT_SESSION, *_session_args(record))

    async def replace_session(
        self, old_hash: bytes | None, record: SessionRecord, keep_per_user: int | None = None
    ) -> int:
        """Swap a session for a new one under a new token, atomically (rotation).

        With `keep_per_user`, the user's least recently used sessions past that many end
        in the same transaction; returns how many.
        """
        async with self._connection() as db, db.transaction():
            if old_hash is not None:
                await db.execute("DELETE FROM sessions WHERE token_hash = $1", old_hash)
            await db.execute(INSERT_SESSION, *_session_args(record))
            if keep_per_user is None or record.user_id is None:
                return 0
            return rows_changed(
                await db.execute(
                    """DELETE FROM sessions WHERE id IN (
                         SELECT id FROM sessions WHERE user_id = $1
                         ORDER BY last_seen DESC, created_at DESC OFFSET $2)""",
                    record.user_id,
                    keep_per_user,
                )
            )

    async def merge_session_data(
        self, token_hash: bytes, changed: Mapping[str, Any], removed: list[str], now: float
    ) -> bool:
        """Apply one request's changes in one UPDATE, keeping other requests' writes."""
        count = await self._execute(
            """UPDATE sessions SET data = (data || $2::jsonb) - $3::text[], last_seen = $4
               WHERE token_hash = $1""",
            token_hash,
            json.dumps(dict(changed)),
            list(removed),
            now,
        )
        return count > 0

    async def touch_sessions(self, token_hashes: Sequence[bytes], now: float) -> None:
        await self._execute(
            "UPDATE sessions SET last_seen = $1 WHERE token_hash = ANY($2::bytea[])",
            now,
            list(token_hashes),
        )

    async def delete_session_by_hash(self, token_hash: bytes) -> None:
        await self._execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)

    async def select_sessions_of_user(
        self, user_id: int, expiry: Expiry, limit: int = 1000, offset: int = 0
    ) -> list[SessionRecord]:
        rows = await self._fetch(
            f"""SELECT {SESSION_COLUMNS} FROM sessions AS s
                LEFT JOIN users AS u ON u.id = s.user_id
                WHERE s.user_id = $1 AND s.epoch = u.epoch AND s.expires_at > $2
                  AND (s.remember OR s.last_seen > $3)
                ORDER BY s.last_seen DESC, s.id LIMIT $4 OFFSET $5""",
            user_id,
            expiry.now,
            expiry.idle_cutoff,
            limit,
            offset,
        )
        return [_session(row) for row in rows]

    async def delete_session_of_user(self, user_id: int, session_id: str) -> bool:
        if "\x00" in session_id:  # cannot be stored, so cannot match
            return False
        deleted = await self._execute(
            "DELETE FROM sessions WHERE id = $1 AND user_id = $2", session_id, user_id
        )
        return deleted > 0

    async def delete_sessions_of_user(self, user_id: int, except_hash: bytes | None = None) -> int:
        return await self._execute(
            """DELETE FROM sessions WHERE user_id = $1
               AND ($2::bytea IS NULL OR token_hash <> $2::bytea)""",
            user_id,
            except_hash,
        )

    async def delete_expired_sessions(self, expiry: Expiry, limit: int) -> int:
        # The purge's deletes (here and below) pick rows in index order and delete by primary
        # key through `= ANY(ARRAY(...))`: without ORDER BY the planner scanned the table for
        # the rows past the cutoff (30 ms a batch behind 300k live rows), and with IN it
        # joined by scanning all of throttle (110 ms a batch).
        return await self._execute(
            """DELETE FROM sessions WHERE id = ANY(ARRAY(
                 (SELECT id FROM sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $3)
                 UNION ALL
                 (SELECT id FROM sessions
                  WHERE NOT remember AND last_seen <= $2 AND expires_at > $1
                  ORDER BY last_seen LIMIT $3)
                 LIMIT $3))""",
            expiry.now,
            expiry.idle_cutoff,
            limit,
        )

    async def count_sessions(self) -> int:
        rows = await self._fetch("SELECT count(*) FROM sessions")
        return int(rows[0][0])

    # throttling

    async def select_throttle(self, key: str, now: float, window: float) -> ThrottleState | None:
        """The key's state while its window is open, else None."""
        rows = await self._fetch(
            """SELECT count, window_start, last_hit FROM throttle
               WHERE key = $1 AND window_start > $2""",
            key,
            now - window,
        )
        return (
            ThrottleState(int(rows[0][0]), float(rows[0][1]), float(rows[0][2])) if rows else None
        )

    async def hit_throttles(
        self,
        limits: Mapping[str, int],
        now: float,
        window: float,
        failure: FailureEvent | None = None,
    ) -> Admission:
        """Count one attempt against every key in a fixed window, all or none.

        Past any key's limit nothing is written and the wait is returned. Otherwise
        `failure` is recorded, provisionally, for the account its email names: the same
        statements run whether or not that account exists (SPEC §7, equal cost).
        """
        async with self._connection() as db:
            transaction = db.transaction()
            await transaction.start()
            try:
                over = 0.0
                for key in sorted(limits):  # one order everywhere: no deadlock between nodes
                    count, start = await db.fetchrow(HIT_THROTTLE, key, now, now - window)
                    if count > limits[key]:
                        over = max(over, start + window - now)
                if over:
                    await transaction.rollback()
                    return Admission(max(over, 1e-3))
                event_id = None
                if failure is not None and "\x00" not in failure.email:
                    event_id = await db.fetchval(
                        """INSERT INTO events (user_id, kind, ip, user_agent, device, created_at)
                           SELECT id, $1, $2, $3, $4, $5 FROM users WHERE email = $6
                           RETURNING id""",
                        failure.kind,
                        failure.ip,
                        failure.user_agent,
                        failure.device,
                        now,
                        failure.email,
                    )
                    await db.execute(
                        TRIM_EVENTS.format(user="(SELECT id FROM users WHERE email = $1)"),
                        failure.email,
                        self.events_per_user,
                    )
            except BaseException:
                await transaction.rollback()
                raise
            await transaction.commit()
        return Admission(None, event_id)

    async def settle_throttles(
        self, clear: Sequence[str], forgive: Sequence[str], event_id: int | None
    ) -> None:
        """A counted attempt succeeded: clear and forgive keys, drop its provisional event."""
        async with self._connection() as db, db.transaction():
            await db.execute("DELETE FROM throttle WHERE key = ANY($1::text[])", list(clear))
            await db.execute(
                "UPDATE throttle SET count = count - 1 WHERE key = ANY($1::text[]) AND count > 0",
                list(forgive),
            )
            if event_id is not None:
                await db.execute("DELETE FROM events WHERE id = $1", event_id)

    async def delete_stale_throttle(self, cutoff: float, limit: int) -> int:
        return await self._execute(
            """DELETE FROM throttle WHERE key = ANY(ARRAY(
                 SELECT key FROM throttle WHERE window_start <= $1
                 ORDER BY window_start LIMIT $2))""",
            cutoff,
            limit,
        )

    # security events

    async def insert_event(
        self, user_id: int, kind: str, ip: str, user_agent: str, now: float, device: str = ""
    ) -> None:
        async with self._connection() as db, db.transaction():
            await db.execute(
                """INSERT INTO events (user_id, kind, ip, user_agent, device, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6)""",
                user_id,
                kind,
                ip,
                user_agent,
                device,
                now,
            )
            await db.execute(TRIM_EVENTS.format(user="$1"), user_id, self.events_per_user)

    async def select_events_of_user(self, user_id: int, limit: int) -> list[Event]:
        rows = await self._fetch(
            """SELECT kind, ip, user_agent, created_at, device FROM events
               WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2""",
            user_id,
            limit,
        )
        return [Event(*row) for row in rows]

    async def delete_old_events(self, cutoff: float, limit: int) -> int:
        return await self._execute(
            """DELETE FROM events WHERE id = ANY(ARRAY(
                 SELECT id FROM events WHERE created_at < $1 ORDER BY created_at LIMIT $2))""",
            cutoff,
            limit,
        )
