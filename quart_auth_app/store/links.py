"""Tokens of mailed links, and the account changes that consume them (SPEC §11).

A token is alive while unused, unexpired, and issued at the user's current credential
epoch and to the user's current address: a reset, a password change or an email change
kills every other outstanding link by construction, with no row to find and delete.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import EmailTaken, NewEvent, Outgoing, Token, User
from .attempts import OWNED_EVENT, AttemptQueries
from .engine import Queries
from .mail import queue_mail
from .sessions import USER_COLUMNS, user_row

TOKEN_USER = ", ".join(
    f"u.{column.strip()} AS u_{column.strip()}" for column in USER_COLUMNS.split(",")
)
ALIVE = "t.epoch = u.epoch AND t.email = u.email AND t.expires_at > :now"


class LinkQueries(AttemptQueries):
    """Issue, peek at and consume link tokens; reset, verify, change email, delete."""

    async def insert_token(
        self, token_hash: bytes, purpose: str, user: User, new_email: str, now: float, ttl: float
    ) -> None:
        await self.execute(
            """INSERT INTO tokens (token_hash, purpose, user_id, email, new_email, epoch,
                                   created_at, expires_at)
               VALUES (:hash, :purpose, :user_id, :email, :new_email, :epoch, :now, :expires)""",
            {
                "hash": token_hash,
                "purpose": purpose,
                "user_id": user.id,
                "email": user.email,
                "new_email": new_email,
                "epoch": user.epoch,
                "now": now,
                "expires": now + ttl,
            },
        )

    async def select_token(self, token_hash: bytes, purpose: str, now: float) -> Token | None:
        """The live token, without using it up (a link's GET, SPEC §11)."""
        return await self._token(self, token_hash, purpose, now, consume=False)

    @staticmethod
    async def _token(
        tx: Queries, token_hash: bytes, purpose: str, now: float, consume: bool
    ) -> Token | None:
        if consume:  # whoever deletes the row owns the token: two requests, one winner
            row = await tx.fetch_one(
                """DELETE FROM tokens WHERE token_hash = :hash AND purpose = :purpose
                   RETURNING user_id, email, new_email, epoch, expires_at""",
                {"hash": token_hash, "purpose": purpose},
            )
            if row is None or row["expires_at"] <= now:
                return None
            user_row_ = await tx.fetch_one(
                f"SELECT {USER_COLUMNS} FROM users WHERE id = :id", {"id": row["user_id"]}
            )
            if user_row_ is None:
                return None
            user = user_row(user_row_)
            if (user.epoch, user.email) != (row["epoch"], row["email"]):
                return None
            return Token(purpose, user, row["new_email"], row["expires_at"])
        row = await tx.fetch_one(
            f"""SELECT t.new_email, t.expires_at, {TOKEN_USER}
                FROM tokens AS t JOIN users AS u ON u.id = t.user_id
                WHERE t.token_hash = :hash AND t.purpose = :purpose AND {ALIVE}""",
            {"hash": token_hash, "purpose": purpose, "now": now},
        )
        if row is None:
            return None
        return Token(purpose, user_row(row, "u_"), row["new_email"], row["expires_at"])

    async def reset_password(
        self, token_hash: bytes, password_hash: str, now: float, event: NewEvent, mail: Outgoing
    ) -> User | None:
        """Use a reset token: new password, epoch + 1 (every session and every other link
        of the user dies), the event and the notification, all or nothing."""
        async with self.transaction() as tx:
            token = await self._token(tx, token_hash, "reset", now, consume=True)
            if token is None:
                return None
            row = await tx.fetch_one(
                f"""UPDATE users SET password_hash = :hash, epoch = epoch + 1
                    WHERE id = :id RETURNING {USER_COLUMNS}""",
                {"hash": password_hash, "id": token.user.id},
            )
            user = user_row(row)
            await tx.execute("DELETE FROM sessions WHERE user_id = :id", {"id": user.id})
            await self._record(tx, user.id, event, now)
            await queue_mail(tx, mail, user.id, now)
        return user

    async def verify_email(self, token_hash: bytes, now: float, event: NewEvent) -> User | None:
        """Use a verification token: the address it was sent to is the account's."""
        async with self.transaction() as tx:
            token = await self._token(tx, token_hash, "verify", now, consume=True)
            if token is None:
                return None
            row = await tx.fetch_one(
                f"UPDATE users SET email_verified = :yes WHERE id = :id RETURNING {USER_COLUMNS}",
                {"yes": True, "id": token.user.id},
            )
            await self._record(tx, token.user.id, event, now)
        return user_row(row)

    async def change_email(
        self, token_hash: bytes, now: float, event: NewEvent, old_address_mail: Outgoing
    ) -> User | None:
        """Use an email-change token: the account moves to the confirmed (and so verified)
        address and the old address is told. EmailTaken if it was registered meanwhile."""
        async with self.transaction() as tx:
            token = await self._token(tx, token_hash, "email", now, consume=True)
            if token is None:
                return None
            taken = await tx.fetch_one(
                "SELECT id FROM users WHERE email = :email", {"email": token.new_email}
            )
            if taken is not None:
                raise EmailTaken(token.new_email)  # rolls back: the link stays usable
            row = await tx.fetch_one(
                f"""UPDATE users SET email = :email, email_verified = :yes WHERE id = :id
                    RETURNING {USER_COLUMNS}""",
                {"email": token.new_email, "yes": True, "id": token.user.id},
            )
            await self._record(tx, token.user.id, event, now)
            await queue_mail(tx, old_address_mail, token.user.id, now)
        return user_row(row)

    async def delete_user(
        self, user_id: int, throttle_keys: Sequence[str], mail: Outgoing, now: float
    ) -> bool:
        """The account and everything of it goes (sessions, tokens and events by cascade,
        its throttle counters by key); only the goodbye mail keeps the address (SPEC §11)."""
        async with self.transaction() as tx:
            deleted = await tx.execute("DELETE FROM users WHERE id = :id", {"id": user_id})
            if not deleted:
                return False
            # Its unsent mail goes too: nothing may later act on the id (SQLite gives the
            # newest account's id again to the next one).
            await tx.execute(
                "DELETE FROM mail_outbox WHERE user_id = :id AND sent_at IS NULL", {"id": user_id}
            )
            for key in throttle_keys:
                await tx.execute("DELETE FROM throttle WHERE key = :key", {"key": key})
            await queue_mail(tx, mail, None, now)
        return True

    async def delete_expired_tokens(self, now: float, limit: int) -> int:
        return await self.execute(
            """DELETE FROM tokens WHERE token_hash IN (
                   SELECT token_hash FROM tokens WHERE expires_at <= :now LIMIT :limit)""",
            {"now": now, "limit": limit},
        )

    async def _record(self, tx: Queries, user_id: int, event: NewEvent, now: float) -> None:
        who: dict[str, Any] = {"user_id": user_id}
        await self._insert_event(
            tx, OWNED_EVENT, who, event.kind, event.ip, event.user_agent, event.device, now
        )
