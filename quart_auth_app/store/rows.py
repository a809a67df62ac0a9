"""The store's rows: frozen dataclasses both engines return, and the store's exceptions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class StoreUnavailable(Exception):
    """The database could not be reached or did not answer in time."""


@dataclass(frozen=True)
class User:
    id: int
    email: str
    name: str
    password_hash: str
    created_at: float
    epoch: int = 0  # moves on at every credential change; older sessions are dead (SPEC §5)
    email_verified: bool = False  # a link mailed to the address was followed (SPEC §11)


@dataclass(frozen=True)
class SessionRecord:
    id: str
    token_hash: bytes
    user_id: int | None
    data: dict[str, Any]
    remember: bool
    created_at: float
    last_seen: float
    expires_at: float
    user_agent: str
    ip: str
    epoch: int = 0  # the user's credential epoch when the session was made
    device: str = ""  # readable name parsed from user_agent when the session was made
    user: User | None = None


@dataclass(frozen=True)
class Event:
    kind: str
    ip: str
    user_agent: str
    created_at: float
    device: str = ""


class ThrottleState(NamedTuple):
    """A throttle key while its window is open."""

    attempts: int
    window_start: float
    last_hit: float  # when an attempt was last counted against it


@dataclass(frozen=True)
class FailureEvent:
    """A security event to record for the account an email names, if there is one."""

    email: str
    kind: str
    ip: str
    user_agent: str
    device: str


@dataclass(frozen=True)
class Admission:
    """What counting an attempt gave: admitted (with its provisional event) or refused."""

    retry_after: float | None  # seconds until the fullest key's window ends; None: admitted
    event_id: int | None = None  # the provisional failure event, for a known account


@dataclass(frozen=True)
class Outgoing:
    """A message to queue in the outbox, in the transaction of what causes it (SPEC §11).

    `context` is what its templates need besides the account's name; links are made when
    the message is sent, so the outbox never holds a usable token.
    """

    kind: str
    recipient: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewEvent:
    """A security event to record in the transaction of what it reports."""

    kind: str
    ip: str
    user_agent: str
    device: str


@dataclass(frozen=True)
class Mail:
    """A queued message, claimed by one sender until `claimed_until`."""

    id: int
    kind: str
    recipient: str
    user_id: int | None
    context: dict[str, Any]
    attempts: int  # including this one
    created_at: float


@dataclass(frozen=True)
class Token:
    """A live link token: what it is for, whose, and for an email change the new address."""

    purpose: str
    user: User
    new_email: str
    expires_at: float


@dataclass(frozen=True)
class Totp:
    """A user's TOTP: its secret (encrypted), whether it is on, the last step accepted."""

    secret: str
    confirmed: bool
    last_step: int


@dataclass(frozen=True)
class Passkey:
    """A WebAuthn credential of a user (SPEC §12)."""

    id: str  # the credential id, base64url
    user_id: int
    name: str
    public_key: bytes
    sign_count: int
    transports: list[str]
    created_at: float
    last_used_at: float | None = None


class EmailTaken(Exception):
    """The address belongs to another account (an email change lost a race)."""


@dataclass(frozen=True)
class Expiry:
    """What makes a session dead at time `now`: past its absolute end, or idle too long."""

    now: float
    idle_cutoff: float  # non-remembered sessions last seen before this are dead
