"""Second factors: TOTP with recovery codes, and the pending sign-in they make (SPEC §12).

TOTP is RFC 6238 as authenticator apps do it (SHA-1, 6 digits, 30 s) through pyotp, with
one step of drift either way; the step a code was accepted at is stored, so no code works
twice. The secret is stored encrypted (Fernet, under a key derived from SECRET_KEY).
Recovery codes are 80 random bits each, stored as SHA-256, deleted when used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken

from .agents import describe
from .auth import finish, login_user, mailer, server_session, store, throttle
from .clock import now
from .devices import derive_key
from .errors import AppError, invalid_input
from .metrics import sign_in as count_sign_in
from .sessions import client_meta
from .store import NewEvent, Outgoing, User
from .validation import text

log = logging.getLogger(__name__)

STEP = 30  # seconds per TOTP code
DRIFT = 1  # steps accepted either side of now
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no look-alikes (0/o, 1/l/i)
RECOVERY_GROUPS = 4  # xxxx-xxxx-xxxx-xxxx: 16 characters, about 80 bits
PENDING_LIFETIME = 300.0  # seconds a password-only sign-in waits for its second factor
METHODS = ["totp", "recovery_code"]
ISSUER = "quart_auth_app"
WRONG_CODE = "That code is not right. Please try again."


def _fernet() -> Fernet:
    return Fernet(base64.urlsafe_b64encode(derive_key("totp-secret")))


def _event(kind: str) -> NewEvent:
    agent, ip = client_meta()
    return NewEvent(kind, ip, agent, describe(agent))


def code_hash(code: str) -> bytes:
    """How a recovery code is stored and looked up (spaces, dashes and case ignored)."""
    normal = "".join(ch for ch in code.lower() if ch.isalnum())
    return hashlib.sha256(normal.encode("ascii", "replace")).digest()


def new_recovery_codes() -> list[str]:
    return [
        "-".join(
            "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(4))
            for _ in range(RECOVERY_GROUPS)
        )
        for _ in range(RECOVERY_CODES)
    ]


def matching_step(secret: str, code: str, at: float) -> int | None:
    """The step whose code `code` is, within DRIFT steps of `at`; None if none."""
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(at // STEP)
    found = None
    for step in range(current - DRIFT, current + DRIFT + 1):  # all compared: constant work
        if hmac.compare_digest(totp.at(step * STEP), code):
            found = step
    return found


async def second_factor_on(user: User) -> bool:
    totp = await store().select_totp(user.id)
    return totp is not None and totp.confirmed


async def status(user: User) -> tuple[bool, int]:
    """Whether TOTP is on, and how many recovery codes are left."""
    if not await second_factor_on(user):
        return False, 0
    return True, await store().count_recovery_codes(user.id)


async def begin_totp(user: User) -> str:
    """A new secret, not on until a code from it is confirmed."""
    secret = pyotp.random_base32()
    if not await store().start_totp(user.id, _fernet().encrypt(secret.encode()).decode(), now()):
        raise AppError(409, "already_enabled", "Two-step sign-in is already on.")
    return secret


def provisioning(user: User, secret: str) -> tuple[str, str]:
    """The otpauth URI for authenticator apps, and its QR code as an SVG data URI, drawn
    here: no third party sees the secret."""
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return uri, segno.make(uri, error="m").svg_data_uri(scale=4, border=2)


def _decrypt(stored: str) -> str | None:
    """The TOTP secret, or None when SECRET_KEY changed since it was stored (logged: the
    account then signs in with a recovery code, and can turn TOTP off and on again)."""
    try:
        return _fernet().decrypt(stored.encode()).decode()
    except InvalidToken:
        log.warning("a TOTP secret does not decrypt under the current SECRET_KEY")
        return None


async def pending_secret(user: User) -> str | None:
    totp = await store().select_totp(user.id)
    if totp is None or totp.confirmed:
        return None
    return _decrypt(totp.secret)


async def confirm_totp(user: User, data: Mapping[str, Any]) -> list[str]:
    """Turn TOTP on with a code from the new secret; the recovery codes, shown once."""
    code = "".join(text(data, "code").split())[:16]
    secret = await pending_secret(user)
    if secret is None:
        raise AppError(409, "not_pending", "Start turning two-step sign-in on first.")
    attempt = await throttle().check_signin(user.email, user, "two-step confirmation failed")
    step = matching_step(secret, code, now())
    if step is None:
        raise invalid_input({"code": WRONG_CODE})
    await throttle().succeeded(attempt)
    codes = new_recovery_codes()
    notice = Outgoing("totp_enabled", user.email, {"name": user.name})
    current = server_session()
    changed = await finish(
        store().confirm_totp(
            user.id,
            step,
            [code_hash(c) for c in codes],
            current.token_hash,
            _event("two-step sign-in turned on"),
            notice,
            now(),
        )
    )
    if changed is None:
        raise AppError(409, "not_pending", "Start turning two-step sign-in on first.")
    mailer().wake()
    current.rotate(changed)
    return codes


async def disable_totp(user: User) -> None:
    """Turn TOTP off (the caller checked re-authentication); other sessions end."""
    notice = Outgoing("totp_disabled", user.email, {"name": user.name})
    current = server_session()
    changed = await finish(
        store().disable_totp(
            user.id, current.token_hash, _event("two-step sign-in turned off"), notice, now()
        )
    )
    if changed is None:
        raise AppError(409, "not_enabled", "Two-step sign-in is not on.")
    mailer().wake()
    current.rotate(changed)


async def regenerate_codes(user: User) -> list[str]:
    """New recovery codes (the caller checked re-authentication); the old ones die."""
    if not await second_factor_on(user):
        raise AppError(409, "not_enabled", "Two-step sign-in is not on.")
    codes = new_recovery_codes()
    event = _event("recovery codes renewed")
    await store().replace_recovery_codes(user.id, [code_hash(c) for c in codes], event, now())
    return codes


async def sign_in(user: User, remember: bool) -> bool:
    """After a right password: signed in (True), or, with a second factor on, a pending
    session that reaches nothing signed-in until /login/verify (False)."""
    if await second_factor_on(user):
        server_session().begin_pending(user, remember, now() + PENDING_LIFETIME)
        count_sign_in("second_factor")
        return False
    await login_user(user, remember)
    count_sign_in("ok")
    return True


async def verify_pending(data: Mapping[str, Any]) -> User:
    """The second step: a TOTP or recovery code for the pending session's account."""
    current = server_session()
    pending = current.pending(now())
    expired = AppError(401, "second_factor_expired", "Please sign in again.")
    if pending is None:
        raise expired
    user_id, remember, epoch = pending
    user = await store().select_user_by_id(user_id)
    if user is None or user.epoch != epoch:  # the password changed meanwhile
        current.end_pending()
        raise expired
    code = text(data, "code")
    if not code.strip() or len(code) > 64:
        raise invalid_input({"code": "Please enter the code from your app or a recovery code."})
    attempt = await throttle().check_signin(user.email, user, "second factor failed")
    if not await _accept(user, "".join(code.split())):
        count_sign_in("failed")
        raise AppError(401, "invalid_code", WRONG_CODE, {"code": WRONG_CODE})
    await throttle().succeeded(attempt)
    current.end_pending()
    await login_user(user, remember)
    count_sign_in("ok")
    return user


async def _accept(user: User, code: str) -> bool:
    if code.isdigit() and len(code) == 6:
        totp = await store().select_totp(user.id)
        if totp is None or not totp.confirmed:
            return False
        secret = _decrypt(totp.secret)
        if secret is None:
            return False
        step = matching_step(secret, code, now())
        return step is not None and await store().use_totp_step(user.id, step)
    if await finish(store().use_recovery_code(user.id, code_hash(code))):
        agent, ip = client_meta()
        await store().insert_event(user.id, "recovery code used", ip, agent, now(), describe(agent))
        return True
    return False
