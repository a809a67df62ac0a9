"""The way back and the address: forgot/reset password, verification, email change (SPEC §11).

Every request here that leads to mail only queues it (the outbox); the sender makes the
link. So a reset asked for a known or an unknown address runs the very same steps here:
shape, throttle, one queued row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import current_app

from .agents import describe
from .auth import finish, hasher, mailer, password_weakness, server_session, store, throttle
from .clock import now
from .errors import AppError, invalid_input
from .lifecycle import prove_identity
from .sessions import client_meta, hash_token
from .store import EmailTaken, NewEvent, Outgoing, Token, User
from .validation import (
    ValidationFailed,
    check_email,
    new_password_length_problem,
    text,
)

MAX_TOKEN_LENGTH = 128  # links carry 43 characters; anything longer is not ours
INVALID_LINK = "This link is invalid or has expired."


def invalid_link() -> AppError:
    return AppError(400, "invalid_token", INVALID_LINK)


def _event(kind: str) -> NewEvent:
    agent, ip = client_meta()
    return NewEvent(kind, ip, agent, describe(agent))


def _token_hash(token: str) -> bytes:
    """The stored key of a link's token; 400 for anything no link could carry."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise invalid_link()
    return hash_token(token)


async def _queue(mail: Outgoing, user_id: int | None) -> None:
    await store().insert_mail(mail, user_id, now())
    mailer().wake()


def reset_sent_message(email: str) -> str:
    minutes = round(float(current_app.config["RESET_LINK_LIFETIME"]) / 60)
    return (
        f"If an account exists for {email}, a link to reset its password is on its way. "
        f"It works for {minutes} minutes."
    )


async def forgot_password(data: Mapping[str, Any]) -> str:
    """Queue a reset link for the address; the same answer whether or not it has an account."""
    try:
        email = check_email(text(data, "email"))
    except ValidationFailed as exc:
        raise invalid_input(exc.fields) from None
    await throttle().check_mail(email)
    await _queue(Outgoing("password_reset", email), None)
    return reset_sent_message(email)


async def reset_token(token: str) -> Token:
    """The live reset token (not used up: a link's GET, or the page that follows it)."""
    found = await store().select_token(_token_hash(token), "reset", now())
    if found is None:
        raise invalid_link()
    return found


async def reset_password(token: str, data: Mapping[str, Any]) -> User:
    """Set a new password with a reset link: every session and every other link of the user
    ends (the epoch moves), an event is recorded and the owner told, in one transaction."""
    new_password = text(data, "new_password")
    problem = new_password_length_problem(new_password, current_app.config)
    if problem:
        raise invalid_input({"new_password": problem})
    found = await reset_token(token)
    user = found.user
    problem = await password_weakness(new_password, [user.email, user.name])
    if problem:
        raise invalid_input({"new_password": problem})
    new_hash = await hasher().hash(new_password)
    notice = Outgoing("password_changed", user.email, {"how": "reset", "name": user.name})
    done = await finish(
        store().reset_password(
            _token_hash(token), new_hash, now(), _event("password reset"), notice
        )
    )
    if done is None:  # used by another request meanwhile
        raise invalid_link()
    mailer().wake()
    current = server_session()
    if current.user is not None and current.user.id == done.id:
        current.end()  # its row went with the others; what follows (a flash) starts afresh
    return done


async def verify_email(token: str) -> User:
    """Mark the address the link was sent to as the account's own."""
    done = await finish(store().verify_email(_token_hash(token), now(), _event("email verified")))
    if done is None:
        raise invalid_link()
    return done


async def resend_verification(user: User) -> None:
    """Mail a new verification link (throttled like resets); nothing for a verified address."""
    if user.email_verified:
        return
    await throttle().check_mail(user.email)
    await _queue(Outgoing("verify_email", user.email, {"epoch": user.epoch}), user.id)


async def request_email_change(user: User, data: Mapping[str, Any]) -> str:
    """Mail a confirmation link to the new address (the password typed again first); the
    account changes when it is followed. Whether the address is taken is only said then."""
    problems: dict[str, str] = {}
    new_email = ""
    try:
        new_email = check_email(text(data, "new_email"))
    except ValidationFailed as exc:
        problems["new_email"] = exc.fields["email"]
    if new_email and new_email == user.email:
        problems["new_email"] = "That is already your email address."
    await prove_identity(user, data, "email change failed", "current_password", problems)
    await throttle().check_mail(new_email)
    asked = {"new_email": new_email, "epoch": user.epoch}  # dropped if the password changes
    await _queue(Outgoing("email_change", new_email, asked), user.id)
    return new_email


async def change_email(token: str) -> User:
    """Follow an email-change link: the account takes the new address, the old one is told."""
    found = await store().select_token(_token_hash(token), "email", now())
    if found is None:
        raise invalid_link()
    old = found.user
    notice = Outgoing(
        "email_changed",
        old.email,
        {"old_email": old.email, "new_email": found.new_email, "name": old.name},
    )
    try:
        done = await finish(
            store().change_email(_token_hash(token), now(), _event("email changed"), notice)
        )
    except EmailTaken:
        raise AppError(409, "email_taken", "That address now belongs to another account.") from None
    if done is None:
        raise invalid_link()
    mailer().wake()
    return done
