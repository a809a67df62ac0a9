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


def _printable(value: str) -> bool:
    """No control characters and no lone surrogates (which cannot be stored)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value)


def text(data: Mapping[str, Any], field: str) -> str:
    """A field as a string ('' when missing or not a string)."""
    value = data.get(field)
    return value if isinstance(value, str) else ""


def normalise_email(value: str) -> str:
    """The stored form of an email: NFC, trimmed, lower-cased."""
    return unicodedata.normalize("NFC", value.strip()).lower()


def check_email(value: str) -> str:
    """The normalised email, or ValidationFailed with a message for the field."""
    email = normalise_email(value)
    if not email:
        raise ValidationFailed({"email": "Please enter your email address."})
    if len(email) > EMAIL_MAX or not _printable(email):
        raise ValidationFailed({"email": "Please enter a valid email address."})
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        raise ValidationFailed({"email": "Please enter a valid email address."}) from None
    return email


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


def check_new_password(
    password: str, config: Mapping[str, Any], user_inputs: list[str]
) -> str | None:
    """A message when a new password is refused (length, then strength), else None."""
    problem = check_password_length(
        password, config["PASSWORD_MIN_LENGTH"], config["PASSWORD_MAX_LENGTH"]
    )
    return problem or weakness(password, user_inputs, config["PASSWORD_MIN_SCORE"])


def check_registration(data: Mapping[str, Any], config: Mapping[str, Any]) -> Registration:
    """Validate a sign-up; ValidationFailed lists every field that is wrong."""
    errors: dict[str, str] = {}
    email = ""
    try:
        email = check_email(text(data, "email"))
    except ValidationFailed as exc:
        errors.update(exc.fields)
    name = unicodedata.normalize("NFC", text(data, "name").strip()) or email.split("@")[0]
    if len(name) > NAME_MAX or not _printable(name):
        errors["name"] = f"Use at most {NAME_MAX} characters, without control characters."
    problem = check_new_password(text(data, "password"), config, [email, name])
    if problem:
        errors["password"] = problem
    if errors:
        raise ValidationFailed(errors)
    return Registration(email=email, password=text(data, "password"), name=name)
