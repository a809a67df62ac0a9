"""Second factors: TOTP and recovery codes, and the epoch move every factor change makes
(SPEC §12)."""

from __future__ import annotations

from collections.abc import Sequence

from . import NewEvent, Outgoing, Totp, User
from .engine import Queries
from .links import LinkQueries
from .mail import queue_mail
from .sessions import USER_COLUMNS, end_other_sessions, user_row


async def move_epoch(tx: Queries, user_id: int, keep_hash: bytes | None) -> User | None:
    """The user's credentials changed: epoch + 1, every session but `keep_hash` ends and
    that one carries on at the new epoch. None if the user is gone."""
    row = await tx.fetch_one(
        f"UPDATE users SET epoch = epoch + 1 WHERE id = :id RETURNING {USER_COLUMNS}",
        {"id": user_id},
    )
    if row is None:
        return None
    user = user_row(row)
    await end_other_sessions(tx, user_id, keep_hash, user.epoch)
    return user


class FactorQueries(LinkQueries):
    """TOTP secrets, accepted steps and recovery codes."""

    async def credential_changed(
        self,
        tx: Queries,
        user_id: int,
        keep_hash: bytes | None,
        event: NewEvent,
        mail: Outgoing | None,
        now: float,
    ) -> User | None:
        """Move the epoch, record the event and queue the notice, in the caller's transaction."""
        user = await move_epoch(tx, user_id, keep_hash)
        if user is not None:
            await self._record(tx, user_id, event, now)
            if mail is not None:
                await queue_mail(tx, mail, user_id, now)
        return user

    async def select_totp(self, user_id: int) -> Totp | None:
        row = await self.fetch_one(
            "SELECT secret, confirmed, last_step FROM totp WHERE user_id = :id", {"id": user_id}
        )
        return Totp(row["secret"], bool(row["confirmed"]), int(row["last_step"])) if row else None

    async def start_totp(self, user_id: int, secret: str, now: float) -> bool:
        """Store a new secret, not yet on; False if TOTP is already on (it stays)."""
        changed = await self.execute(
            """INSERT INTO totp AS t (user_id, secret, confirmed, last_step, created_at)
               VALUES (:id, :secret, :no, 0, :now)
               ON CONFLICT (user_id) DO UPDATE SET secret = :secret, created_at = :now
               WHERE t.confirmed = :no""",
            {"id": user_id, "secret": secret, "no": False, "now": now},
        )
        return changed > 0

    async def confirm_totp(
        self,
        user_id: int,
        step: int,
        code_hashes: Sequence[bytes],
        keep_hash: bytes | None,
        event: NewEvent,
        mail: Outgoing,
        now: float,
    ) -> User | None:
        """Turn TOTP on (the confirming code's step used up), with new recovery codes; the
        epoch moves. None if it was not pending any more."""
        async with self.transaction() as tx:
            turned_on = await tx.execute(
                """UPDATE totp SET confirmed = :yes, last_step = :step
                   WHERE user_id = :id AND confirmed = :no""",
                {"yes": True, "no": False, "step": step, "id": user_id},
            )
            if not turned_on:
                return None
            await self._replace_codes(tx, user_id, code_hashes)
            return await self.credential_changed(tx, user_id, keep_hash, event, mail, now)

    async def use_totp_step(self, user_id: int, step: int) -> bool:
        """Accept a code of `step` once: only a step later than the last accepted one."""
        changed = await self.execute(
            """UPDATE totp SET last_step = :step
               WHERE user_id = :id AND confirmed = :yes AND last_step < :step""",
            {"step": step, "id": user_id, "yes": True},
        )
        return changed > 0

    async def use_recovery_code(self, user_id: int, code_hash: bytes) -> bool:
        """Use a recovery code up; whoever deletes it first is the one it worked for."""
        deleted = await self.execute(
            "DELETE FROM recovery_codes WHERE user_id = :id AND code_hash = :hash",
            {"id": user_id, "hash": code_hash},
        )
        return deleted > 0

    async def replace_recovery_codes(
        self, user_id: int, code_hashes: Sequence[bytes], event: NewEvent, now: float
    ) -> None:
        async with self.transaction() as tx:
            await self._replace_codes(tx, user_id, code_hashes)
            await self._record(tx, user_id, event, now)

    @staticmethod
    async def _replace_codes(tx: Queries, user_id: int, code_hashes: Sequence[bytes]) -> None:
        await tx.execute("DELETE FROM recovery_codes WHERE user_id = :id", {"id": user_id})
        for code_hash in code_hashes:
            await tx.execute(
                "INSERT INTO recovery_codes (user_id, code_hash) VALUES (:id, :hash)",
                {"id": user_id, "hash": code_hash},
            )

    async def count_recovery_codes(self, user_id: int) -> int:
        row = await self.fetch_one(
            "SELECT count(*) AS n FROM recovery_codes WHERE user_id = :id", {"id": user_id}
        )
        return int(row["n"]) if row else 0

    async def disable_totp(
        self, user_id: int, keep_hash: bytes | None, event: NewEvent, mail: Outgoing, now: float
    ) -> User | None:
        """Turn TOTP off and drop its recovery codes; the epoch moves."""
        async with self.transaction() as tx:
            deleted = await tx.execute("DELETE FROM totp WHERE user_id = :id", {"id": user_id})
            if not deleted:
                return None
            await tx.execute("DELETE FROM recovery_codes WHERE user_id = :id", {"id": user_id})
            return await self.credential_changed(tx, user_id, keep_hash, event, mail, now)
