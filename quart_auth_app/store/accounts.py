"""Users and sessions: their queries, written once for both engines (SPEC §5, §8)."""

from __future__ import annotations

import json
from typing import Any

from . import Expiry, Outgoing, SessionRecord, User
from .engine import Engine, Queries
from .mail import queue_mail

USER_COLUMNS = "id, email, name, password_hash, created_at, epoch, email_verified"
SESSION_COLUMNS = """
    s.id, s.token_hash, s.user_id, s.data, s.remember, s.created_at, s.last_seen,
    s.expires_at, s.user_agent, s.ip, s.epoch, s.device,
    u.id AS u_id, u.email AS u_email, u.name AS u_name, u.password_hash AS u_password_hash,
    u.created_at AS u_created_at, u.epoch AS u_epoch, u.email_verified AS u_email_verified
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


def user_row(row: Any, prefix: str = "") -> User:
    return User(
        row[f"{prefix}id"],
        row[f"{prefix}email"],
        row[f"{prefix}name"],
        row[f"{prefix}password_hash"],
        row[f"{prefix}created_at"],
        row[f"{prefix}epoch"],
        bool(row[f"{prefix}email_verified"]),
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


class AccountQueries(Engine):
    """Users and their sessions."""

    # users

    async def insert_user(
        self, email: str, name: str, password_hash: str, now: float, mail: Outgoing | None = None
    ) -> User | None:
        """Create a user (and queue `mail` to it); None when the email is taken (the unique
        index decides)."""
        async with self.transaction() as tx:
            row = await tx.fetch_one(
                f"""INSERT INTO users (email, name, password_hash, created_at)
                    VALUES (:email, :name, :hash, :now)
                    ON CONFLICT (email) DO NOTHING RETURNING {USER_COLUMNS}""",
                {"email": email, "name": name, "hash": password_hash, "now": now},
            )
            if row is None:
                return None
            user = user_row(row)
            if mail is not None:
                await queue_mail(tx, mail, user.id, now)
        return user

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
        self,
        user_id: int,
        password_hash: str,
        keep_hash: bytes | None,
        mail: Outgoing | None = None,
        now: float = 0.0,
    ) -> User | None:
        """New password and epoch; every session but `keep_hash` ends, that one moves on;
        `mail` (the notification) is queued with them."""
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
            if mail is not None:
                await queue_mail(tx, mail, user_id, now)
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
