"""Users: their queries, written once for both engines (SPEC §5, §8)."""

from __future__ import annotations

from .engine import Engine
from .mail import queue_mail
from .rows import Outgoing, User
from .sessions import USER_COLUMNS, end_other_sessions, user_row


class AccountQueries(Engine):
    """Users."""

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
            await end_other_sessions(tx, user.id, keep_hash, user.epoch)
            if mail is not None:
                await queue_mail(tx, mail, user_id, now)
        return user
