"""Input rules shared by the HTML forms and the JSON API, so both say the same thing."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email

from .passwords import weakness

EMAIL_MAX = 254
NAME_MAX = 100
# Unicode normalisation is superlinear on runs of combining marks (1.5 s for a 64 KB email):
# a raw field longer than this is refused before anything but len() looks at it. NFC can
# shrink text (a decomposed Hangul syllable is three code points), hence the margin.
RAW_FACTOR = 4
INVALID_EMAIL = "Please enter a valid email address."


class ValidationFailed(Exception):
    """Input was refused; `fields` maps each field to its message."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


@dataclass(frozen=True)
class Registration:
    email: str
    password: str
    name: str


CONTROL = frozenset({"Cc", "Cs"})  # lone surrogates cannot even be stored
# A name is shown to people: also no unassigned or private-use code points, no line or
# paragraph separators, and none of the bidi controls that make text read otherwise than
# it is stored (Trojan Source). Other format characters stay: Persian needs ZWNJ, emoji ZWJ.
NOT_IN_NAMES = CONTROL | {"Cn", "Co", "Zl", "Zp"}
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _printable(value: str, refused: frozenset[str] = CONTROL) -> bool:
    """No character of the `refused` categories (control characters, lone surrogates)."""
    return not any(unicodedata.category(ch) in refused for ch in value)


def showable(name: str) -> bool:
    """Whether a name (an account's, a passkey's) may be shown to people as it is: no control,
    unassigned or private-use characters, no line breaks, no bidi controls; ZWNJ and ZWJ
    (Persian, emoji) are fine."""
    return _printable(name, NOT_IN_NAMES) and BIDI_CONTROLS.isdisjoint(name)


def text(data: Mapping[str, Any], field: str) -> str:
    """A field as a string ('' when missing or not a string)."""
    value = data.get(field)
    return value if isinstance(value, str) else ""


def bounded_nfc(value: str, max_length: int) -> str | None:
    """`value` trimmed and NFC-normalised, or None when its raw form is far too long for that."""
    if len(value) > max_length * RAW_FACTOR:
        return None
    return unicodedata.normalize("NFC", value.strip())


def normalise_email(value: str) -> str:
    """The stored form of an email: NFC, trimmed, lower-cased.

    A raw value too long to be an email comes back as it is, unnormalised: it is longer
    than EMAIL_MAX, so every caller's length check refuses it.
    """
    email = bounded_nfc(value, EMAIL_MAX)
    return value if email is None else email.lower()


def sign_in_email(value: str) -> str:
    """The typed sign-in email, normalised; ValidationFailed for a missing or malformed one.

    Shape only (no email_validator): whatever was stored passed `check_email` at sign-up.
    """
    email = normalise_email(value)
    if not email:
        raise ValidationFailed({"email": "Please enter your email address."})
    if len(email) > EMAIL_MAX or not _printable(email):
        raise ValidationFailed({"email": INVALID_EMAIL})
    return email


def check_email(value: str) -> str:
    """The normalised email, or ValidationFailed with a message for the field."""
    email = sign_in_email(value)
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        raise ValidationFailed({"email": INVALID_EMAIL}) from None
    return email


def check_name(value: str, email: str) -> str:
    """The display name (the email's local part when empty), or ValidationFailed."""
    name = bounded_nfc(value, NAME_MAX)
    if name is None or len(name) > NAME_MAX or not showable(name):
        raise ValidationFailed(
            {"name": f"Use at most {NAME_MAX} characters, without control characters."}
        )
    return name or email.split("@")[0]


def check_password_length(password: str, min_length: int, max_length: int) -> str | None:
    """A message when the password is too short, too long or unreadable, else None."""
    if len(password) < min_length:
        return f"Use at least {min_length} characters."
    if len(password) > max_length:
        return f"Use at most {max_length} characters."
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        return "The password contains characters that cannot be used."
    return None


def typed_password_problem(password: str, config: Mapping[str, Any], missing: str) -> str | None:
    """A message when a password typed to prove who one is (sign-in, current password) is
    missing (`missing`) or cannot be one, else None: a 400, not a counted guess."""
    problem = check_password_length(password, 1, config["PASSWORD_MAX_LENGTH"])
    return (missing if not password else problem) if problem else None


def new_password_length_problem(password: str, config: Mapping[str, Any]) -> str | None:
    """A message when a new password's length is out of the configured bounds, else None."""
    return check_password_length(
        password, config["PASSWORD_MIN_LENGTH"], config["PASSWORD_MAX_LENGTH"]
    )


def check_new_password(
    password: str, config: Mapping[str, Any], user_inputs: list[str]
) -> str | None:
    """A message when a new password is refused (length, then strength), else None."""
    problem = new_password_length_problem(password, config)
    return problem or weakness(password, user_inputs, config["PASSWORD_MIN_SCORE"])


def check_signup_fields(data: Mapping[str, Any], config: Mapping[str, Any]) -> Registration:
    """Validate a sign-up's shape, cheaply and before any throttle: every field is bounded,
    the password's strength is not judged yet (see `passwords.check_strength`).

    ValidationFailed lists every field that is wrong.
    """
    errors: dict[str, str] = {}
    email = name = ""
    try:
        email = check_email(text(data, "email"))
    except ValidationFailed as exc:
        errors.update(exc.fields)
    try:
        name = check_name(text(data, "name"), email)
    except ValidationFailed as exc:
        errors.update(exc.fields)
    password = text(data, "password")
    problem = new_password_length_problem(password, config)
    if problem:
        errors["password"] = problem
    if errors:
        raise ValidationFailed(errors)
    return Registration(email=email, password=password, name=name)
