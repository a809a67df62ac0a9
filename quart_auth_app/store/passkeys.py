"""Passkeys (WebAuthn credentials) of users (SPEC §12)."""

from __future__ import annotations

import json
from typing import Any

from . import NewEvent, Outgoing, Passkey, User
from .factors import FactorQueries

PASSKEY_COLUMNS = "id, user_id, name, public_key, sign_count, transports, created_at, last_used_at"


def passkey_row(row: Any) -> Passkey:
    return Passkey(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        public_key=bytes(row["public_key"]),
        sign_count=int(row["sign_count"]),
        transports=list(json.loads(row["transports"])),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )


class _Taken(Exception):
    """The credential id is registered already: roll the transaction back."""


class PasskeyQueries(FactorQueries):
    """Passkeys: register, list, use (signature counter), rename, remove."""

    async def insert_passkey(
        self, passkey: Passkey, keep_hash: bytes | None, event: NewEvent, mail: Outgoing, now: float
    ) -> User | None:
        """Add the passkey; the epoch moves (every session but `keep_hash` ends), the event is
        recorded and `mail` queued with it. None if its credential id is taken or the user is
        gone."""
        try:
            async with self.transaction() as tx:
                user = await self.credential_changed(
                    tx, passkey.user_id, keep_hash, event, mail, now
                )
                if user is None:
                    return None
                inserted = await tx.fetch_one(
                    f"""INSERT INTO passkeys ({PASSKEY_COLUMNS})
                        VALUES (:id, :user_id, :name, :public_key, :sign_count, :transports,
                                :now, NULL)
                        ON CONFLICT (id) DO NOTHING RETURNING id""",
                    {
                        "id": passkey.id,
                        "user_id": passkey.user_id,
                        "name": passkey.name,
                        "public_key": passkey.public_key,
                        "sign_count": passkey.sign_count,
                        "transports": json.dumps(passkey.transports),
                        "now": now,
                    },
                )
                if inserted is None:
                    raise _Taken  # undoes the epoch move, the event and the mail
                return user
        except _Taken:
            return None

    async def select_passkeys_of_user(self, user_id: int) -> list[Passkey]:
        """The user's passkeys, oldest first."""
        rows = await self.fetch_all(
            f"""SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = :user_id
                ORDER BY created_at, id""",
            {"user_id": user_id},
        )
        return [passkey_row(row) for row in rows]

    async def select_passkey(self, credential_id: str) -> Passkey | None:
        if "\x00" in credential_id:  # no stored id holds one (and PostgreSQL text cannot)
            return None
        row = await self.fetch_one(
            f"SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE id = :id", {"id": credential_id}
        )
        return passkey_row(row) if row else None

    async def use_passkey(
        self, credential_id: str, old_count: int, new_count: int, now: float
    ) -> bool:
        """Record a sign-in with the passkey: its counter moves from `old_count` to
        `new_count`, unless another sign-in moved it meanwhile (then False)."""
        changed = await self.execute(
            """UPDATE passkeys SET sign_count = :new, last_used_at = :now
               WHERE id = :id AND sign_count = :old""",
            {"new": new_count, "now": now, "id": credential_id, "old": old_count},
        )
        return changed > 0

    async def use_challenge(self, digest: bytes, expires_at: float) -> bool:
        """Record that the challenge with this SHA-256 was answered: True the first time,
        False if it was before (two answers at once: the unique key lets one through)."""
        added = await self.execute(
            """INSERT INTO used_challenges (digest, expires_at) VALUES (:digest, :expires_at)
               ON CONFLICT (digest) DO NOTHING""",
            {"digest": digest, "expires_at": expires_at},
        )
        return added > 0

    async def delete_used_challenges(self, now: float, limit: int) -> int:
        """Forget answered challenges past their expiry (they are refused by it anyway)."""
        return await self.execute(
            """DELETE FROM used_challenges WHERE digest IN (
                   SELECT digest FROM used_challenges WHERE expires_at <= :now LIMIT :limit)""",
            {"now": now, "limit": limit},
        )

    async def rename_passkey(self, user_id: int, credential_id: str, name: str) -> bool:
        """False if the user has no such passkey."""
        changed = await self.execute(
            "UPDATE passkeys SET name = :name WHERE id = :id AND user_id = :user_id",
            {"name": name, "id": credential_id, "user_id": user_id},
        )
        return changed > 0

    async def delete_passkey(
        self, user_id: int, credential_id: str, keep_hash: bytes | None, event: NewEvent, now: float
    ) -> User | None:
        """Remove the passkey; the epoch moves and the event is recorded. None if the user
        has no such passkey."""
        async with self.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM passkeys WHERE id = :id AND user_id = :user_id",
                {"id": credential_id, "user_id": user_id},
            )
            if not deleted:
                return None
            return await self.credential_changed(tx, user_id, keep_hash, event, None, now)
