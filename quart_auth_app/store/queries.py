"""Every query of the store, written once for both engines (SPEC §8, §9).

Statements use named parameters (`:name`); SQLite takes them as they are and the
PostgreSQL engine compiles them to `$n`. Each engine offers the same three calls,
outside a transaction (`fetch_all`, `fetch_one`, `execute`: one statement each, reads
on their own connections) or inside one (`async with self.transaction() as tx`), the
way quart-db draws the line. The few statements that genuinely differ between the
engines live in `sqlite.py` and `postgres.py`, each saying why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from . import Admission, Event, Expiry, FailureEvent, SessionRecord, ThrottleState, User

USER_COLUMNS = "id, email, name, password_hash, created_at, epoch"
SESSION_COLUMNS = """
    s.id, s.token_hash, s.user_id, s.data, s.remember, s.created_at, s.last_seen,
    s.expires_at, s.user_agent, s.ip, s.epoch, s.device,
    u.id AS u_id, u.email AS u_email, u.name AS u_name, u.password_hash AS u_password_hash,
    u.created_at AS u_created_at, u.epoch AS u_epoch
"""
SESSIONS_WITH_USERS = (
    f"SELECT {SESSION_COLUMNS} FROM sessions AS s LEFT JOIN users AS u ON u.id = s.user_id"
)
INSERT_SESSION = """
    INSERT INTO sessions (id, token_hash, user_id, data, remember, created_at,
                          last_seen, expires_at, user_agent, ip, epoch, device)
    VALUES (:id, :token_hash, :user_id, :data, :remember, :created_at,
            :last_seen, :expires_at, :user_agent, :ip, :epoch, :device)
"""
HIT_THROTTLE = """
    INSERT INTO throttle AS t (key, count, window_start, last_hit) VALUES (:key, 1, :now, :now)
    ON CONFLICT (key) DO UPDATE SET
      count = CASE WHEN t.window_start <= :cutoff THEN 1 ELSE t.count + 1 END,
      window_start = CASE WHEN t.window_start <= :cutoff THEN :now ELSE t.window_start END,
      last_hit = :now
    RETURNING count, window_start
"""
# A user's events past the newest :keep (SPEC §7: events bounded per user, not only in time).
TRIM_EVENTS = """
    DELETE FROM events WHERE user_id = {user} AND id NOT IN (
      SELECT id FROM events WHERE user_id = {user} ORDER BY created_at DESC, id DESC LIMIT :keep)
"""
USER_BY_EMAIL = "(SELECT id FROM users WHERE email = :email)"


class Queries(Protocol):
    """What an engine runs statements with, outside a transaction or inside one."""

    async def fetch_all(self, sql: str, params: Mapping[str, Any] = ...) -> list[Any]: ...
    async def fetch_one(self, sql: str, params: Mapping[str, Any] = ...) -> Any | None: ...
    async def execute(self, sql: str, params: Mapping[str, Any] = ...) -> int: ...


def user_row(row: Any, prefix: str = "") -> User:
    return User(
        row[f"{prefix}id"],
        row[f"{prefix}email"],
        row[f"{prefix}name"],
        row[f"{prefix}password_hash"],
        row[f"{prefix}created_at"],
        row[f"{prefix}epoch"],
    )


def session_row(row: Any) -> SessionRecord:
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
        user=user_row(row, "u_") if row["user_id"] is not None else None,
    )


def session_params(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "token_hash": record.token_hash,
        "user_id": record.user_id,
        "data": json.dumps(record.data),
        "remember": record.remember,
        "created_at": record.created_at,
        "last_seen": record.last_seen,
        "expires_at": record.expires_at,
        "user_agent": record.user_agent,
        "ip": record.ip,
        "epoch": record.epoch,
        "device": record.device,
    }


class _Refused(Exception):
    """Raised inside a transaction to roll it back: a throttle key was full."""


class SQLStore(Queries):
    """The `Store` on any engine that provides `Queries` and `transaction()`."""

    events_per_user = 1000

    def transaction(self) -> AbstractAsyncContextManager[Queries]:
        raise NotImplementedError

    # users

    async def insert_user(
        self, email: str, name: str, password_hash: str, now: float
    ) -> User | None:
        """Create a user; None when the email is taken (the unique index decides)."""
        async with self.transaction() as tx:
            row = await tx.fetch_one(
                f"""INSERT INTO users (email, name, password_hash, created_at)
                    VALUES (:email, :name, :hash, :now)
                    ON CONFLICT (email) DO NOTHING RETURNING {USER_COLUMNS}""",
                {"email": email, "name": name, "hash": password_hash, "now": now},
            )
        return user_row(row) if row else None

    async def select_user_by_email(self, email: str) -> User | None:
        if "\x00" in email:  # no stored email holds one (and PostgreSQL text cannot)
            return None
        row = await self.fetch_one(
            f"SELECT {USER_COLUMNS} FROM users WHERE email = :email", {"email": email}
        )
        return user_row(row) if row else None

    async def select_user_by_id(self, user_id: int) -> User | None:
        row = await self.fetch_one(
            f"SELECT {USER_COLUMNS} FROM users WHERE id = :id", {"id": user_id}
        )
        return user_row(row) if row else None

    async def rehash_user_password(self, user_id: int, old_hash: str, new_hash: str) -> bool:
        """Store the same password at a new cost, unless the password changed meanwhile."""
        changed = await self.execute(
            "UPDATE users SET password_hash = :new WHERE id = :id AND password_hash = :old",
            {"new": new_hash, "id": user_id, "old": old_hash},
        )
        return changed > 0

    async def change_user_password(
        self, user_id: int, password_hash: str, keep_hash: bytes | None
    ) -> User | None:
        """New password and epoch; every session but `keep_hash` ends, that one moves on."""
        async with self.transaction() as tx:
            row = await tx.fetch_one(
                f"""UPDATE users SET password_hash = :hash, epoch = epoch + 1 WHERE id = :id
                    RETURNING {USER_COLUMNS}""",
                {"hash": password_hash, "id": user_id},
            )
            if row is None:
                return None
            user = user_row(row)
            await self._delete_sessions_of_user(tx, user_id, keep_hash)
            await tx.execute(
                "UPDATE sessions SET epoch = :epoch WHERE token_hash = :keep",
                {"epoch": user.epoch, "keep": keep_hash},
            )
        return user

    # sessions

    async def select_session_by_hash(self, token_hash: bytes) -> SessionRecord | None:
        row = await self.fetch_one(
            f"{SESSIONS_WITH_USERS} WHERE s.token_hash = :hash", {"hash": token_hash}
        )
        return session_row(row) if row else None

    async def insert_session(self, record: SessionRecord) -> None:
        await self.execute(INSERT_SESSION, session_params(record))

    async def replace_session(
        self, old_hash: bytes | None, record: SessionRecord, keep_per_user: int | None = None
    ) -> int:
        """Swap a session for a new one under a new token, atomically (rotation).

        With `keep_per_user`, the user's least recently used sessions past that many end
        in the same transaction; returns how many.
        """
        async with self.transaction() as tx:
            if old_hash is not None:
                await tx.execute(
                    "DELETE FROM sessions WHERE token_hash = :hash", {"hash": old_hash}
                )
            await tx.execute(INSERT_SESSION, session_params(record))
            if keep_per_user is None or record.user_id is None:
                return 0
            return await tx.execute(
                """DELETE FROM sessions WHERE user_id = :user_id AND id NOT IN (
                     SELECT id FROM sessions WHERE user_id = :user_id
                     ORDER BY last_seen DESC, created_at DESC LIMIT :keep)""",
                {"user_id": record.user_id, "keep": keep_per_user},
            )

    async def delete_session_by_hash(self, token_hash: bytes) -> None:
        await self.execute("DELETE FROM sessions WHERE token_hash = :hash", {"hash": token_hash})

    async def select_sessions_of_user(
        self, user_id: int, expiry: Expiry, limit: int = 1000, offset: int = 0
    ) -> list[SessionRecord]:
        rows = await self.fetch_all(
            f"""{SESSIONS_WITH_USERS}
                WHERE s.user_id = :user_id AND s.epoch = u.epoch AND s.expires_at > :now
                  AND (s.remember = :remembered OR s.last_seen > :idle_cutoff)
                ORDER BY s.last_seen DESC, s.id LIMIT :limit OFFSET :offset""",
            {
                "user_id": user_id,
                "now": expiry.now,
                "remembered": True,
                "idle_cutoff": expiry.idle_cutoff,
                "limit": limit,
                "offset": offset,
            },
        )
        return [session_row(row) for row in rows]

    async def delete_session_of_user(self, user_id: int, session_id: str) -> bool:
        if "\x00" in session_id:  # cannot be stored, so cannot match
            return False
        deleted = await self.execute(
            "DELETE FROM sessions WHERE id = :id AND user_id = :user_id",
            {"id": session_id, "user_id": user_id},
        )
        return deleted > 0

    async def delete_sessions_of_user(self, user_id: int, except_hash: bytes | None = None) -> int:
        async with self.transaction() as tx:
            return await self._delete_sessions_of_user(tx, user_id, except_hash)

    @staticmethod
    async def _delete_sessions_of_user(tx: Queries, user_id: int, keep: bytes | None) -> int:
        if keep is None:
            return await tx.execute(
                "DELETE FROM sessions WHERE user_id = :user_id", {"user_id": user_id}
            )
        return await tx.execute(
            "DELETE FROM sessions WHERE user_id = :user_id AND token_hash != :keep",
            {"user_id": user_id, "keep": keep},
        )

    async def count_sessions(self) -> int:
        row = await self.fetch_one("SELECT count(*) AS n FROM sessions")
        return int(row["n"]) if row else 0

    # throttling

    async def select_throttle(self, key: str, now: float, window: float) -> ThrottleState | None:
        """The key's state while its window is open, else None."""
        row = await self.fetch_one(
            """SELECT count, window_start, last_hit FROM throttle
               WHERE key = :key AND window_start > :cutoff""",
            {"key": key, "cutoff": now - window},
        )
        if row is None:
            return None
        return ThrottleState(int(row["count"]), float(row["window_start"]), float(row["last_hit"]))

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
            async with self.transaction() as tx:
                for key in sorted(limits):  # one order everywhere: no deadlock between nodes
                    [row] = await tx.fetch_all(  # RETURNING: exactly one row
                        HIT_THROTTLE, {"key": key, "now": now, "cutoff": now - window}
                    )
                    if row["count"] > limits[key]:
                        over = max(over, row["window_start"] + window - now)
                if over:
                    raise _Refused
                if failure is None or "\x00" in failure.email:
                    return Admission(None)
                event = await tx.fetch_one(
                    """INSERT INTO events (user_id, kind, ip, user_agent, device, created_at)
                        SELECT id, :kind, :ip, :agent, :device, :now FROM users
                        WHERE email = :email RETURNING id""",
                    {
                        "kind": failure.kind,
                        "ip": failure.ip,
                        "agent": failure.user_agent,
                        "device": failure.device,
                        "now": now,
                        "email": failure.email,
                    },
                )
                await tx.execute(
                    TRIM_EVENTS.format(user=USER_BY_EMAIL),
                    {"email": failure.email, "keep": self.events_per_user},
                )
                return Admission(None, int(event["id"]) if event else None)
        except _Refused:
            return Admission(max(over, 1e-3))

    async def settle_throttles(
        self, clear: Sequence[str], forgive: Sequence[str], event_id: int | None
    ) -> None:
        """A counted attempt succeeded: clear and forgive keys, drop its provisional event."""
        async with self.transaction() as tx:
            for key in clear:
                await tx.execute("DELETE FROM throttle WHERE key = :key", {"key": key})
            for key in forgive:
                await tx.execute(
                    "UPDATE throttle SET count = count - 1 WHERE key = :key AND count > 0",
                    {"key": key},
                )
            if event_id is not None:
                await tx.execute("DELETE FROM events WHERE id = :id", {"id": event_id})

    # security events

    async def insert_event(
        self, user_id: int, kind: str, ip: str, user_agent: str, now: float, device: str = ""
    ) -> None:
        async with self.transaction() as tx:
            await tx.execute(
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
            await tx.execute(
                TRIM_EVENTS.format(user=":user_id"),
                {"user_id": user_id, "keep": self.events_per_user},
            )

    async def select_events_of_user(self, user_id: int, limit: int) -> list[Event]:
        rows = await self.fetch_all(
            """SELECT kind, ip, user_agent, created_at, device FROM events
               WHERE user_id = :user_id ORDER BY created_at DESC, id DESC LIMIT :limit""",
            {"user_id": user_id, "limit": limit},
        )
        return [Event(*row) for row in rows]
