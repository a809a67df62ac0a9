"""Request and answer models of the account's life: recovery, the address,
re-authentication, export (SPEC §11)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import ConfigDict

from .models import (
    ADA,
    SESSION,
    NewEmail,
    NewPassword,
    Password,
    Timestamp,
    closed,
    doc,
    examples,
)

TOKEN = "q3Yx0H5bQ2yq3m1ZLkV0wJq3Yx0H5bQ2yq3m1ZLkV0w"  # noqa: S105 (an example)
LinkToken = Annotated[
    str,
    doc("The token from a mailed link (the last path segment).", minLength=1, maxLength=128),
]
MaybePassword = Annotated[
    str,
    doc(
        "The account's password, typed again. May be left out (or empty) within REAUTH_WINDOW "
        "seconds "
        "of the session's last password (sign-in or POST /api/reauthenticate); otherwise "
        "the answer is 403 `reauthentication_required`.",
        {"maxLength": "PASSWORD_MAX_LENGTH"},
    ),
]


@dataclass
class ForgotIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples({"email": ADA["email"]})
    email: NewEmail


@dataclass
class MessageOut:
    """What happened, in words for a person."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {
            "message": "If an account exists for ada@example.com, a link to reset its password "
            "is on its way. It works for 60 minutes."
        }
    )
    message: str


@dataclass
class ResetIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples(
        {
            "token": "q3Yx0H5bQ2yq3m1ZLkV0wJq3Yx0H5bQ2yq3m1ZLkV0w",
            "new_password": "a new passphrase 9",
        }
    )
    token: LinkToken
    new_password: NewPassword


@dataclass
class TokenIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples({"token": TOKEN})
    token: LinkToken


@dataclass
class EmailChangeIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples(
        {"new_email": "ada@example.org", "current_password": ADA["password"]}
    )
    new_email: NewEmail
    current_password: MaybePassword = ""


@dataclass
class PasswordAgainIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples({"password": ADA["password"]})
    password: MaybePassword = ""


@dataclass
class ReauthIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples({"password": ADA["password"]})
    password: Password


PROFILE = {
    "id": 1,
    "email": "ada@example.com",
    "name": "Ada",
    "email_verified": True,
    "created_at": 1767225600.0,
}


@dataclass
class ProfileOut:
    """The account's own fields."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(PROFILE)
    id: int
    email: str
    name: str
    email_verified: bool
    created_at: Timestamp


@dataclass
class ExportSessionOut:
    """A live session, as on /account."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {k: v for k, v in SESSION.items() if k != "current"}
    )
    id: str
    device: str
    user_agent: str
    ip: str
    created_at: Timestamp
    last_seen: Timestamp
    expires_at: Timestamp
    remember: bool


@dataclass
class EventOut:
    """A security event of the account."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {
            "kind": "sign-in",
            "ip": "203.0.113.7",
            "device": "Firefox 128 on Ubuntu",
            "user_agent": SESSION["user_agent"],
            "created_at": 1767225600.0,
        }
    )
    kind: str
    ip: str
    device: str
    user_agent: str
    created_at: Timestamp


@dataclass
class PasskeyOut:
    """A passkey of the account (names and dates only)."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {"id": "pk_1", "name": "Laptop", "created_at": 1767225600.0, "last_used_at": None}
    )
    id: str
    name: str
    created_at: Timestamp
    last_used_at: Timestamp | None = None


@dataclass
class ExportOut:
    """Everything the account holds about its owner, without secrets (SPEC §11)."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {"profile": PROFILE, "sessions": [], "events": [], "passkeys": []}
    )
    profile: ProfileOut
    sessions: list[ExportSessionOut]
    events: list[EventOut]
    passkeys: list[PasskeyOut]
