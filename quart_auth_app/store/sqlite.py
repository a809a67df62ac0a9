"""SQLite engine: every query of the store, on the connections of `sqlite_db` (SPEC §8)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from . import Admission, Event, Expiry, FailureEvent, SessionRecord, ThrottleState, User
from .sqlite_db import SQLiteDatabase, execute

TOUCH_BATCH = 500  # sessions per UPDATE (well under SQLite's bound-parameter limit)

SESSION_COLUMNS = """
    s.id, s.token_hash, s.user_id, s.data, s.remember, s.created_at, s.last_seen,
    s.expires_at, s.user_agent, s.ip, s.epoch, s.device,
    u.email AS u_email, u.name AS u_name, u.password_hash AS u_password_hash,
    u.created_at AS u_created_at, u.epoch AS u_epoch
"""
USER_COLUMNS = "id, email, name, password_hash, created_at, epoch"


def _user(row: sqlite3.Row) -> User:
    return User(
        row["id"], row["email"], row["name"], row["password_hash"], row["created_at"], row["epoch"]
    )


def _session(row: sqlite3.Row) -> SessionRecord:
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


def _session_params(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "token_hash": record.token_hash,
        "user_id": record.user_id,
        "data": json.dumps(record.data),
        "remember": int(record.remember),
        "created_at": record.created_at,
        "last_seen": record.last_seen,
        "expires_at": record.expires_at,
        "user_agent": record.user_agent,
        "ip": record.ip,
        "epoch": record.epoch,
        "device": record.device,
    }


INSERT_SESSION = """
    INSERT INTO sessions (id, token_hash, user_id, data, remember, created_at,
                          last_seen, expires_at, user_agent, ip, epoch, device)
    VALUES (:id, :token_hash, :user_id, :data, :remember, :created_at,
            :last_seen, :expires_at, :user_agent, :ip, :epoch, :device)
"""


HIT_THROTTLE = """
    INSERT INTO throttle (key, count, window_start, last_hit) VALUES (:key, 1, :now, :now)
    ON CONFLICT (key) DO UPDATE SET
      count = CASE WHEN window_start <= :cutoff THEN 1 ELSE count + 1 END,
      window_start = CASE WHEN window_start <= :cutoff THEN :now ELSE window_start END,
      last_hit = :now
    RETURNING count, window_start
"""


# A user's events past the newest `keep` (SPEC §7: events bounded per user, not only in time).
TRIM_EVENTS = """
    DELETE FROM events WHERE id IN (
      SELECT id FROM events WHERE user_id = {user}
      ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET :keep)
"""


class _Refused(Exception):
    """Raised inside a write transaction to roll it back: a throttle key was full."""


class SQLiteStore(SQLiteDatabase):
    """Users, sessions, throttling and events in one SQLite file."""

    engine = "sqlite"
    events_per_user = 1000

    # users

    async def insert_user(
        self, email: str, name: str, password_hash: str, now: float
    ) -> User | None:
        """Create a user; None when the email is taken."""
        async with (
            self._write() as db,
            db.execute(
                f"""INSERT INTO users (email, name, password_hash, created_at)
                   VALUES (:email, :name, :hash, :now)
                   ON CONFLICT (email) DO NOTHING
                   RETURNING {USER_COLUMNS}""",
                {"email": email, "name": name, "hash": password_hash, "now": now},
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return _user(row) if row else None

    async def select_user_by_email(self, email: str) -> User | None:
        rows = await self._read(
            f"SELECT {USER_COLUMNS} FROM users WHERE email = :email",
            {"email": email},
        )
        return _user(rows[0]) if rows else None

    async def select_user_by_id(self, user_id: int) -> User | None:
        rows = await self._read(
            f"SELECT {USER_COLUMNS} FROM users WHERE id = :id",
            {"id": user_id},
        )
        return _user(rows[0]) if rows else None

    async def rehash_user_password(self, user_id: int, old_hash: str, new_hash: str) -> bool:
        """Store the same password at a new cost, unless the password changed meanwhile."""
        async with self._write() as db:
            changed = await execute(
                db,
                "UPDATE users SET password_hash = :new WHERE id = :id AND password_hash = :old",
                {"new": new_hash, "id": user_id, "old": old_hash},
            )
        return changed > 0

    async def change_user_password(
        self, user_id: int, password_hash: str, keep_hash: bytes | None
    ) -> User | None:
        """New password and epoch; every session but `keep_hash` ends, that one moves on."""
        async with self._write() as db:
            async with db.execute(
                f"""UPDATE users SET password_hash = :hash, epoch = epoch + 1 WHERE id = :id
                    RETURNING {USER_COLUMNS}""",
                {"hash": password_hash, "id": user_id},
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return None
            user = _user(row)
            params = {"user_id": user_id, "keep": keep_hash, "epoch": user.epoch}
            await execute(
                db,
                """DELETE FROM sessions WHERE user_id = :user_id
                   AND (:keep IS NULL OR token_hash != :keep)""",
                params,
            )
            await execute(db, "UPDATE sessions SET epoch = :epoch WHERE token_hash = :keep", params)
        return user

    # sessions

    async def select_session_by_hash(self, token_hash: bytes) -> SessionRecord | None:
        rows = await self._read(
            f"""SELECT {SESSION_COLUMNS} FROM sessions AS s
                LEFT JOIN users AS u ON u.id = s.user_id
                WHERE s.token_hash = :hash""",
            {"hash": token_hash},
        )
        return _session(rows[0]) if rows else None

    async def insert_session(self, record: SessionRecord) -> None:
        async with self._write() as db:
            await execute(db, INSERT_SESSION, _session_params(record))

    async def replace_session(
        self, old_hash: bytes | None, record: SessionRecord, keep_per_user: int | None = None
    ) -> int:
        """Swap a session for a new one under a new token, atomically (rotation).

        With `keep_per_user`, the user's least recently used sessions past that many end
        in the same transaction; returns how many.
        """
        async with self._write() as db:
            if old_hash is not None:
                await execute(
                    db, "DELETE FROM sessions WHERE token_hash = :hash", {"hash": old_hash}
                )
            await execute(db, INSERT_SESSION, _session_params(record))
            if keep_per_user is None or record.user_id is None:
                return 0
            return await execute(
                db,
                """DELETE FROM sessions WHERE id IN (
                     SELECT id FROM sessions WHERE user_id = :user_id
                     ORDER BY last_seen DESC, created_at DESC LIMIT -1 OFFSET :keep)""",
                {"user_id": record.user_id, "keep": keep_per_user},
            )

    async def merge_session_data(
        self, token_hash: bytes, changed: Mapping[str, Any], removed: list[str], now: float
    ) -> bool:
        """Apply one request's changes to the stored data, keeping other requests' writes."""
        async with self._write() as db:
            async with db.execute(
                "SELECT data FROM sessions WHERE token_hash = :hash", {"hash": token_hash}
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return False
            data = json.loads(row[0])
            data.update(changed)
            for key in removed:
                data.pop(key, None)
            await execute(
                db,
                "UPDATE sessions SET data = :data, last_seen = :now WHERE token_hash = :hash",
                {"data": json.dumps(data), "now": now, "hash": token_hash},
            )
        return True

    async def touch_sessions(self, token_hashes: Sequence[bytes], now: float) -> None:
        for start in range(0, len(token_hashes), TOUCH_BATCH):
            chunk = token_hashes[start : start + TOUCH_BATCH]
            marks = ", ".join("?" * len(chunk))
            await self._write_one(
                f"UPDATE sessions SET last_seen = ? WHERE token_hash IN ({marks})", (now, *chunk)
            )

    async def delete_session_by_hash(self, token_hash: bytes) -> None:
        async with self._write() as db:
            await execute(db, "DELETE FROM sessions WHERE token_hash = :hash", {"hash": token_hash})

    async def select_sessions_of_user(
        self, user_id: int, expiry: Expiry, limit: int = 1000, offset: int = 0
    ) -> list[SessionRecord]:
        rows = await self._read(
            f"""SELECT {SESSION_COLUMNS} FROM sessions AS s
                LEFT JOIN users AS u ON u.id = s.user_id
                WHERE s.user_id = :user_id AND s.epoch = u.epoch AND s.expires_at > :now
                  AND (s.remember = 1 OR s.last_seen > :idle_cutoff)
                ORDER BY s.last_seen DESC, s.id LIMIT :limit OFFSET :offset""",
            {
                "user_id": user_id,
                "now": expiry.now,
                "idle_cutoff": expiry.idle_cutoff,
                "limit": limit,
                "offset": offset,
            },
        )
        return [_session(row) for row in rows]

    async def delete_session_of_user(self, user_id: int, session_id: str) -> bool:
        async with self._write() as db:
            deleted = await execute(
                db,
                "DELETE FROM sessions WHERE id = :id AND user_id = :user_id",
                {"id": session_id, "user_id": user_id},
            )
        return deleted > 0

    async def delete_sessions_of_user(self, user_id: int, except_hash: bytes | None = None) -> int:
        async with self._write() as db:
            return await execute(
                db,
                """DELETE FROM sessions WHERE user_id = :user_id
                   AND (:except_hash IS NULL OR token_hash != :except_hash)""",
                {"user_id": user_id, "except_hash": except_hash},
            )

    async def delete_expired_sessions(self, expiry: Expiry, limit: int) -> int:
        async with self._write() as db:
            return await execute(
                db,
                """DELETE FROM sessions WHERE id IN (
                     SELECT id FROM sessions WHERE expires_at <= :now
                     UNION ALL
                     SELECT id FROM sessions
                     WHERE remember = 0 AND last_seen <= :idle_cutoff AND expires_at > :now
                     LIMIT :limit)""",
                {"now": expiry.now, "idle_cutoff": expiry.idle_cutoff, "limit": limit},
            )

    async def count_sessions(self) -> int:
        rows = await self._read("SELECT count(*) FROM sessions")
        return int(rows[0][0])

    # throttling

    async def select_throttle(self, key: str, now: float, window: float) -> ThrottleState | None:
        """The key's state while its window is open, else None."""
        rows = await self._read(
            """SELECT count, window_start, last_hit FROM throttle
               WHERE key = :key AND window_start > :cutoff""",
            {"key": key, "cutoff": now - window},
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
        over = 0.0
        try:
            async with self._write() as db:
                for key, limit in limits.items():
                    async with db.execute(
                        HIT_THROTTLE, {"key": key, "now": now, "cutoff": now - window}
                    ) as cursor:
                        [(count, start)] = await cursor.fetchall()
                    if count > limit:
                        over = max(over, start + window - now)
                if over:
                    raise _Refused
                if failure is None:
                    return Admission(None)
                async with db.execute(
                    """INSERT INTO events (user_id, kind, ip, user_agent, device, created_at)
                       SELECT id, :kind, :ip, :agent, :device, :now FROM users
                       WHERE email = :email
                       RETURNING id""",
                    {
                        "kind": failure.kind,
                        "ip": failure.ip,
                        "agent": failure.user_agent,
                        "device": failure.device,
                        "now": now,
                        "email": failure.email,
                    },
                ) as cursor:
                    row = await cursor.fetchone()
                await execute(
                    db,
                    TRIM_EVENTS.format(user="(SELECT id FROM users WHERE email = :email)"),
                    {"email": failure.email, "keep": self.events_per_user},
                )
                return Admission(None, int(row[0]) if row else None)
        except _Refused:
            return Admission(max(over, 1e-3))

    async def settle_throttles(
        self, clear: Sequence[str], forgive: Sequence[str], event_id: int | None
    ) -> None:
        """A counted attempt succeeded: clear and forgive keys, drop its provisional event."""
        async with self._write() as db:
            for key in clear:
                await execute(db, "DELETE FROM throttle WHERE key = :key", {"key": key})
            for key in forgive:
                await execute(
                    db,
                    "UPDATE throttle SET count = count - 1 WHERE key = :key AND count > 0",
                    {"key": key},
                )
            if event_id is not None:
                await execute(db, "DELETE FROM events WHERE id = :id", {"id": event_id})

    async def delete_stale_throttle(self, cutoff: float, limit: int) -> int:
        async with self._write() as db:
            return await execute(
                db,
                """DELETE FROM throttle WHERE key IN (
                     SELECT key FROM throttle WHERE window_start <= :cutoff LIMIT :limit)""",
                {"cutoff": cutoff, "limit": limit},
            )

    # security events

    async def insert_event(
        self, user_id: int, kind: str, ip: str, user_agent: str, now: float, device: str = ""
    ) -> None:
        async with self._write() as db:
            await execute(
                db,
                """INSERT INTO events (user_id, kind, ip, user_agent, device, created_at)
                   VALUES (:user_id, :kind, :ip, :user_agent, :device, :now)""",
                {
                    "user_id": user_id,
                    "kind": kind,
                    "ip": ip,
                    "user_agent": user_agent,
                    "device": device,
                    "now": now,
                },
            )
            await execute(
                db,
                TRIM_EVENTS.format(user=":user_id"),
                {"user_id": user_id, "keep": self.events_per_user},
            )

    async def select_events_of_user(self, user_id: int, limit: int) -> list[Event]:
        rows = await self._read(
            """SELECT kind, ip, user_agent, created_at, device FROM events
               WHERE user_id = :user_id ORDER BY created_at DESC, id DESC LIMIT :limit""",
            {"user_id": user_id, "limit": limit},
        )
        return [Event(*row) for row in rows]

    async def delete_old_events(self, cutoff: float, limit: int) -> int:
        async with self._write() as db:
            return await execute(
                db,
                """DELETE FROM events WHERE id IN (
                     SELECT id FROM events WHERE created_at < :cutoff LIMIT :limit)""",
                {"cutoff": cutoff, "limit": limit},
            )
