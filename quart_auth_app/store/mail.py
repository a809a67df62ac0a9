"""The mail outbox: messages queued with their cause, claimed and sent once (SPEC §11)."""

from __future__ import annotations

import json
from typing import Any

from . import Mail, Outgoing
from .engine import Engine, Queries

MAIL_COLUMNS = "id, kind, recipient, user_id, context, attempts, created_at"
DUE = "sent_at IS NULL AND failed_at IS NULL"


async def queue_mail(tx: Queries, mail: Outgoing, user_id: int | None, now: float) -> None:
    """Queue `mail` inside the caller's transaction: it exists if and only if its cause does."""
    await tx.execute(
        """INSERT INTO mail_outbox (kind, recipient, user_id, context, created_at,
                                    next_attempt_at)
           VALUES (:kind, :recipient, :user_id, :context, :now, :now)""",
        {
            "kind": mail.kind,
            "recipient": mail.recipient,
            "user_id": user_id,
            "context": json.dumps(dict(mail.context)),
            "now": now,
        },
    )


def mail_row(row: Any) -> Mail:
    return Mail(
        id=row["id"],
        kind=row["kind"],
        recipient=row["recipient"],
        user_id=row["user_id"],
        context=json.loads(row["context"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
    )


class MailQueries(Engine):
    """The outbox's queue: claim, mark sent, retry later or give up, purge."""

    # How the claim's subquery locks the rows it picks; PostgreSQL overrides it.
    CLAIM_LOCK = ""

    async def insert_mail(self, mail: Outgoing, user_id: int | None, now: float) -> None:
        async with self.transaction() as tx:
            await queue_mail(tx, mail, user_id, now)

    async def claim_mail(self, now: float, lease: float, limit: int) -> list[Mail]:
        """Take up to `limit` due messages for `lease` seconds, oldest first; each attempt
        counts. One statement: two senders (workers or nodes) never claim the same row."""
        rows = await self.fetch_all(
            f"""UPDATE mail_outbox SET claimed_until = :until, attempts = attempts + 1
                WHERE id IN (
                    SELECT id FROM mail_outbox
                    WHERE {DUE} AND next_attempt_at <= :now AND claimed_until <= :now
                    ORDER BY id LIMIT :limit {self.CLAIM_LOCK})
                RETURNING {MAIL_COLUMNS}""",
            {"until": now + lease, "now": now, "limit": limit},
        )
        return sorted((mail_row(row) for row in rows), key=lambda mail: mail.id)

    async def mark_mail_sent(self, mail_id: int, now: float, note: str = "") -> None:
        """Delivered (or, with a `note`, dropped on purpose): the context goes with it."""
        await self.execute(
            """UPDATE mail_outbox SET sent_at = :now, context = '{}', last_error = :note
               WHERE id = :id""",
            {"now": now, "id": mail_id, "note": note},
        )

    async def retry_mail(self, mail_id: int, error: str, next_attempt_at: float) -> None:
        await self.execute(
            """UPDATE mail_outbox SET next_attempt_at = :next, claimed_until = 0,
                                      last_error = :error
               WHERE id = :id""",
            {"next": next_attempt_at, "error": error[:500], "id": mail_id},
        )

    async def give_up_mail(self, mail_id: int, error: str, now: float) -> None:
        await self.execute(
            """UPDATE mail_outbox SET failed_at = :now, context = '{}', last_error = :error
               WHERE id = :id""",
            {"now": now, "error": error[:500], "id": mail_id},
        )

    async def count_mail_due(self) -> int:
        row = await self.fetch_one(f"SELECT count(*) AS n FROM mail_outbox WHERE {DUE}")
        return int(row["n"]) if row else 0

    async def delete_old_mail(self, cutoff: float, limit: int) -> int:
        """Sent or abandoned messages older than `cutoff` (their addresses go with them)."""
        return await self.execute(
            f"""DELETE FROM mail_outbox WHERE id IN (
                    SELECT id FROM mail_outbox WHERE NOT ({DUE}) AND created_at < :cutoff
                    LIMIT :limit)""",
            {"cutoff": cutoff, "limit": limit},
        )
