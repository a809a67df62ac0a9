"""The storage interface: rows as frozen dataclasses (`rows.py`), one `Store` protocol,
two engines.

SQLite (`sqlite.py`) is the embedded default; PostgreSQL (`postgres.py`) is the
shared engine for several nodes (SPEC §9). Views and domain code only ever see
`Store`, so both engines answer the same calls with the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .rows import (
    Admission,
    EmailTaken,
    Event,
    Expiry,
    FailureEvent,
    Mail,
    NewEvent,
    Outgoing,
    Passkey,
    SessionRecord,
    StoreUnavailable,
    ThrottleState,
    Token,
    Totp,
    User,
)

__all__ = [
    "Admission",
    "EmailTaken",
    "Event",
    "Expiry",
    "FailureEvent",
    "Mail",
    "NewEvent",
    "Outgoing",
    "Passkey",
    "SessionRecord",
    "Store",
    "StoreUnavailable",
    "ThrottleState",
    "Token",
    "Totp",
    "User",
    "open_store",
]


class Store(Protocol):
    """Everything the app asks of its database; every write is committed on return."""

    engine: str
    events_per_user: int  # the purge deletes a user's oldest events past this many

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> int: ...
    async def ping(self) -> None: ...
    async def schema_version(self) -> tuple[int, int]:
        """The database's migration number, and the newest this code's schema file has."""
        ...

    def maintenance(self) -> AbstractAsyncContextManager[bool]:
        """Yield True while this process alone may purge (across workers and nodes), else False.

        Never waits for the lock: a process that does not get it skips the round.
        """
        ...

    async def insert_user(
        self, email: str, name: str, password_hash: str, now: float, mail: Outgoing | None = None
    ) -> User | None: ...
    async def select_user_by_email(self, email: str) -> User | None: ...
    async def select_user_by_id(self, user_id: int) -> User | None: ...
    async def rehash_user_password(self, user_id: int, old_hash: str, new_hash: str) -> bool: ...
    async def change_user_password(
        self,
        user_id: int,
        password_hash: str,
        keep_hash: bytes | None,
        mail: Outgoing | None = None,
        now: float = 0.0,
    ) -> User | None: ...

    async def select_session_by_hash(self, token_hash: bytes) -> SessionRecord | None: ...
    async def insert_session(self, record: SessionRecord) -> None: ...
    async def replace_session(
        self, old_hash: bytes | None, record: SessionRecord, keep_per_user: int | None = None
    ) -> int: ...
    async def merge_session_data(
        self, token_hash: bytes, changed: Mapping[str, Any], removed: list[str], now: float
    ) -> bool: ...
    async def touch_sessions(self, token_hashes: Sequence[bytes], now: float) -> None: ...
    async def delete_session_by_hash(self, token_hash: bytes) -> None: ...
    async def select_sessions_of_user(
        self, user_id: int, expiry: Expiry, limit: int = 1000, offset: int = 0
    ) -> list[SessionRecord]: ...
    async def delete_session_of_user(self, user_id: int, session_id: str) -> bool: ...
    async def delete_sessions_of_user(
        self, user_id: int, except_hash: bytes | None = None
    ) -> int: ...
    async def delete_expired_sessions(self, expiry: Expiry, limit: int) -> int: ...
    async def count_sessions(self) -> int: ...

    async def select_throttle(
        self, key: str, now: float, window: float
    ) -> ThrottleState | None: ...
    async def hit_throttles(
        self,
        limits: Mapping[str, int],
        now: float,
        window: float,
        failure: FailureEvent | None = None,
    ) -> Admission: ...
    async def settle_throttles(
        self, clear: Sequence[str], forgive: Sequence[str], event_id: int | None
    ) -> None: ...
    async def delete_stale_throttle(self, cutoff: float, limit: int) -> int: ...

    async def insert_event(
        self, user_id: int, kind: str, ip: str, user_agent: str, now: float, device: str = ""
    ) -> None: ...
    async def select_events_of_user(self, user_id: int, limit: int) -> list[Event]: ...
    async def delete_old_events(self, cutoff: float, limit: int) -> int: ...
    async def delete_ownerless_events(self, cutoff: float, limit: int) -> int:
        """Failed sign-ins' events of unknown emails (user_id NULL) from before `cutoff`."""
        ...

    async def select_users_over_event_cap(self, keep: int) -> list[int]: ...
    async def trim_events(self, user_id: int, keep: int) -> int: ...

    async def insert_token(
        self, token_hash: bytes, purpose: str, user: User, new_email: str, now: float, ttl: float
    ) -> None: ...
    async def select_token(self, token_hash: bytes, purpose: str, now: float) -> Token | None: ...
    async def reset_password(
        self, token_hash: bytes, password_hash: str, now: float, event: NewEvent, mail: Outgoing
    ) -> User | None: ...
    async def verify_email(self, token_hash: bytes, now: float, event: NewEvent) -> User | None: ...
    async def change_email(
        self, token_hash: bytes, now: float, event: NewEvent, old_address_mail: Outgoing
    ) -> User | None: ...
    async def delete_user(
        self, user_id: int, throttle_keys: Sequence[str], mail: Outgoing, now: float
    ) -> bool: ...
    async def delete_expired_tokens(self, now: float, limit: int) -> int: ...

    # second factors (factors.py); a credential change moves the
    # epoch: every session but `keep_hash` ends, that one carries on (SPEC §12)
    async def select_totp(self, user_id: int) -> Totp | None: ...
    async def start_totp(self, user_id: int, secret: str, now: float) -> bool: ...
    async def confirm_totp(
        self,
        user_id: int,
        step: int,
        code_hashes: Sequence[bytes],
        keep_hash: bytes | None,
        event: NewEvent,
        mail: Outgoing,
        now: float,
    ) -> User | None: ...
    async def use_totp_step(self, user_id: int, step: int) -> bool: ...
    async def use_recovery_code(self, user_id: int, code_hash: bytes) -> bool: ...
    async def replace_recovery_codes(
        self, user_id: int, code_hashes: Sequence[bytes], event: NewEvent, now: float
    ) -> None: ...
    async def count_recovery_codes(self, user_id: int) -> int: ...
    async def disable_totp(
        self, user_id: int, keep_hash: bytes | None, event: NewEvent, mail: Outgoing, now: float
    ) -> User | None: ...

    # passkeys (passkeys.py): adding or removing one moves the epoch like the factors above
    async def insert_passkey(
        self, passkey: Passkey, keep_hash: bytes | None, event: NewEvent, mail: Outgoing, now: float
    ) -> User | None: ...
    async def select_passkeys_of_user(self, user_id: int) -> list[Passkey]: ...
    async def select_passkey(self, credential_id: str) -> Passkey | None: ...
    async def use_passkey(
        self, credential_id: str, old_count: int, new_count: int, now: float
    ) -> bool: ...
    async def use_challenge(self, digest: bytes, expires_at: float) -> bool: ...
    async def delete_used_challenges(self, now: float, limit: int) -> int: ...
    async def rename_passkey(self, user_id: int, credential_id: str, name: str) -> bool: ...
    async def delete_passkey(
        self, user_id: int, credential_id: str, keep_hash: bytes | None, event: NewEvent, now: float
    ) -> User | None: ...

    async def insert_mail(self, mail: Outgoing, user_id: int | None, now: float) -> None: ...
    async def claim_mail(self, now: float, lease: float, limit: int) -> list[Mail]: ...
    async def mark_mail_sent(self, mail_id: int, now: float, note: str = "") -> None: ...
    async def retry_mail(self, mail_id: int, error: str, next_attempt_at: float) -> None: ...
    async def give_up_mail(self, mail_id: int, error: str, now: float) -> None: ...
    async def count_mail_due(self) -> int: ...
    async def delete_old_mail(self, cutoff: float, limit: int) -> int: ...


def open_store(config: Mapping[str, Any]) -> Store:
    """Pick the engine the configuration names: PostgreSQL for `DATABASE_URL`, else SQLite."""
    url = config.get("DATABASE_URL")
    if url:
        from .postgres import PostgresStore  # type: ignore[import-untyped,unused-ignore]

        store: Store = PostgresStore(
            url,
            pool_size=int(config["DATABASE_POOL_SIZE"]),
            wait=float(config.get("DATABASE_WAIT", 0)),
        )
    else:
        from .sqlite import SQLiteStore

        store = SQLiteStore(str(config["DATABASE"]))
    store.events_per_user = int(config.get("EVENTS_PER_USER", store.events_per_user))
    return store
