"""Sessions: their queries, written once for both engines (SPEC §5, §8)."""

from __future__ import annotations

import json
from typing import Any

from .engine import Engine, Queries
from .rows import Expiry, SessionRecord, User

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
    """A row of SESSIONS_WITH_USERS, read by position in SESSION_COLUMNS' order: every
    signed-in request reads one, and a column looked up by name is a scan of the names."""
    (id_, token_hash, user_id, data, remember, created_at, last_seen, expires_at,
     user_agent, ip, epoch, device,
     u_id, u_email, u_name, u_password_hash, u_created_at, u_epoch, u_verified) = row  # fmt: skip
    return SessionRecord(
        id=id_,
        token_hash=bytes(token_hash),
        user_id=user_id,
        data=json.loads(data),
        remember=bool(remember),
        created_at=created_at,
        last_seen=last_seen,
        expires_at=expires_at,
        user_agent=user_agent,
        ip=ip,
        epoch=epoch,
        device=device,
        user=(
            User(u_id, u_email, u_name, u_password_hash, u_created_at, u_epoch, bool(u_verified))
            if user_id is not None
            else None
        ),
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


async def delete_sessions_of_user(tx: Queries, user_id: int, keep: bytes | None) -> int:
    """End every session of the user but `keep`'s."""
    if keep is None:
        return await tx.execute(
            "DELETE FROM sessions WHERE user_id = :user_id", {"user_id": user_id}
        )
    return await tx.execute(
        "DELETE FROM sessions WHERE user_id = :user_id AND token_hash != :keep",
        {"user_id": user_id, "keep": keep},
    )


async def end_other_sessions(tx: Queries, user_id: int, keep: bytes | None, epoch: int) -> None:
    """The user's credentials changed (now at `epoch`): every session but `keep`'s ends, and
    that one carries on at the new epoch."""
    await delete_sessions_of_user(tx, user_id, keep)
    if keep is not None:
        await tx.execute(
            "UPDATE sessions SET epoch = :epoch WHERE token_hash = :keep",
            {"epoch": epoch, "keep": keep},
        )


class SessionQueries(Engine):
    """Sessions, with their user joined in."""

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
            return await delete_sessions_of_user(tx, user_id, except_hash)

    async def count_sessions(self) -> int:
        row = await self.fetch_one("SELECT count(*) AS n FROM sessions")
        return int(row["n"]) if row else 0
