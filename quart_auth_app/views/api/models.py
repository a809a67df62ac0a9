"""The API's request and answer models: the OpenAPI document's schemas (SPEC §4, §11).

The rules themselves run in the domain functions, for the pages and the API alike;
these say them in the document, with the bounds read from the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field, RootModel, WithJsonSchema

from ...openapi import FROM_CONFIG
from ...validation import EMAIL_MAX, NAME_MAX


def doc(description: str, settings: dict[str, str] | None = None, **schema: Any) -> Any:
    """A field's description and bounds as the server checks them (validation.py), for the
    document only: the rules run in the domain functions, for the pages and the API alike.

    `settings` maps a keyword to a configuration key, whose value the document shows.
    """
    extra: dict[str, Any] = {"description": description, **schema}
    if settings:
        extra[FROM_CONFIG] = settings
    return Field(json_schema_extra=extra)


EMAIL_RULES = (
    f"Trimmed, NFC-normalised and lower-cased before use; at most {EMAIL_MAX} characters then."
)
NewEmail = Annotated[
    str,
    doc(
        f"The account's email (internationalised addresses are fine). {EMAIL_RULES}",
        format="idn-email",
        minLength=1,
        maxLength=EMAIL_MAX,
    ),
]
SignInEmail = Annotated[
    str,
    doc(
        f"The email the account was registered with. {EMAIL_RULES} Any other string "
        "is refused as wrong credentials (401).",
        format="idn-email",
        minLength=1,
        maxLength=EMAIL_MAX,
    ),
]
NewPassword = Annotated[
    str,
    doc(
        "Counted in characters (code points), as sent. It must also be hard enough to "
        "guess (zxcvbn), which is judged on the server: a weak one is refused with 400.",
        {"minLength": "PASSWORD_MIN_LENGTH", "maxLength": "PASSWORD_MAX_LENGTH"},
    ),
]
Password = Annotated[
    str,
    doc(
        "The account's password, as registered.",
        {"maxLength": "PASSWORD_MAX_LENGTH"},
        minLength=1,
    ),
]
CurrentPassword = Annotated[
    str,
    doc(
        "The account's password now. Anything else, however long or short, is refused "
        "as a wrong password (403).",
        {"maxLength": "PASSWORD_MAX_LENGTH"},
        minLength=1,
    ),
]
Name = Annotated[
    str,
    doc(
        f"Display name, trimmed and NFC-normalised: at most {NAME_MAX} characters then, "
        "no control, unassigned or private-use characters, line separators or bidi "
        "controls. Empty or absent: the email's local part.",
        maxLength=NAME_MAX,
        pattern="^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
    ),
]
# pydantic reads JSON leniently: 0/1 and a few words count as booleans, and clients may rely
# on that, so the document says so rather than the server refusing them now.
REMEMBER = {
    "description": "Keep the session (and its cookie) for REMEMBER_LIFETIME seconds. "
    "Send a JSON boolean; 0 and 1, and the strings true/false, t/f, yes/no, y/n, on/off "
    "and 1/0 (in any case) are read as booleans too.",
    "anyOf": [
        {"type": "boolean"},
        {"enum": [0, 1]},
        {
            "type": "string",
            "pattern": "^(?:[Tt](?:[Rr][Uu][Ee])?|[Ff](?:[Aa][Ll][Ss][Ee])?|[Yy](?:[Ee][Ss])?"
            "|[Nn][Oo]?|[Oo](?:[Nn]|[Ff][Ff])|[01])$",
        },
    ],
}
Timestamp = Annotated[float, doc("Seconds since the Unix epoch (UTC).")]


def examples(*examples: dict[str, Any]) -> ConfigDict:
    """Model settings: these examples in the document."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


def closed(*examples: dict[str, Any]) -> ConfigDict:
    """Answers never carry other members (a leak would fail the schema)."""
    return ConfigDict(json_schema_extra={"examples": list(examples), "additionalProperties": False})


ADA = {"email": "ada@example.com", "password": "correct horse battery staple"}


@dataclass
class RegisterIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples({**ADA, "name": "Ada"})
    email: NewEmail
    password: NewPassword
    name: Name | None = None


@dataclass
class LoginIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples({**ADA, "remember": True})
    email: SignInEmail
    password: Password
    remember: Annotated[bool, WithJsonSchema(REMEMBER)] = False


@dataclass
class PasswordIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples(
        {"current_password": ADA["password"], "new_password": "a new, longer passphrase 9"}
    )
    current_password: CurrentPassword
    new_password: NewPassword


@dataclass
class UserOut:
    """The account."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {"id": 1, "email": "ada@example.com", "name": "Ada", "email_verified": True}
    )
    id: Annotated[int, doc("The account's id.", minimum=1)]
    email: Annotated[str, doc("The stored (normalised) email.", maxLength=EMAIL_MAX)]
    name: Annotated[str, doc("Display name.", minLength=1, maxLength=NAME_MAX)]
    email_verified: Annotated[
        bool, doc("Whether a link mailed to the address was followed (SPEC §11).")
    ]


SESSION = {
    "id": "Jq3Yx0H5bQ2yq3m1ZLkV0w",
    "current": True,
    "user_agent": "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "device": "Firefox 128 on Ubuntu",
    "ip": "203.0.113.7",
    "created_at": 1767225600.0,
    "last_seen": 1767229200.0,
    "expires_at": 1767312000.0,
    "remember": False,
}


@dataclass
class SessionOut:
    """One live session of the user."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(SESSION)
    id: Annotated[str, doc("Pass to DELETE /api/sessions/{session_id}.", minLength=1)]
    current: Annotated[bool, Field(description="Whether this is the session of this request.")]
    user_agent: str
    device: Annotated[str, doc("Readable, e.g. `Firefox 128 on Ubuntu`.")]
    ip: Annotated[str, doc("The client address when the session was last seen.")]
    created_at: Timestamp
    last_seen: Timestamp
    expires_at: Annotated[
        float,
        doc("When it ends unless used again (idle timeout) or at the latest (absolute lifetime)."),
    ]
    remember: bool


@dataclass
class SessionsOut:
    """A page of the user's live sessions, most recently used first."""

    __pydantic_config__: ClassVar[ConfigDict] = closed({"sessions": [SESSION], "next_offset": 50})
    sessions: list[SessionOut]
    # pass as `offset` for the next page; None: no more
    next_offset: Annotated[int, doc("Pass as `offset` for the next page.", minimum=1)] | None = None


@dataclass
class PageQuery:
    limit: Annotated[int, Field(ge=1, le=100, description="Sessions per page.")] = 50
    offset: Annotated[
        int, Field(ge=0, le=100_000, description="How many to skip: a `next_offset`.")
    ] = 0


@dataclass
class RevokedOut:
    """How many sessions ended."""

    __pydantic_config__: ClassVar[ConfigDict] = closed({"revoked": 2})
    revoked: Annotated[int, doc("How many sessions ended.", minimum=0)]


@dataclass
class SecondFactorOut:
    """The password was right; the session waits (5 minutes) for a second factor."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {"second_factor_required": True, "methods": ["totp", "recovery_code"]}
    )
    second_factor_required: bool
    methods: list[str]


class LoginOut(RootModel[UserOut | SecondFactorOut]):
    """The account, signed in; or, with a second factor on, what the pending session needs."""
