"""Device cookies (OWASP): a browser that signed in to an account is known to it (SPEC §7).

After a successful sign-in the browser gets a long-lived cookie naming the account,
signed with a key derived from `SECRET_KEY`. Failed attempts from a browser holding a
valid one for the account count against that browser alone, so an attacker who locks
the account for everyone else does not lock out its owner on their own devices.

The cookie is `USER_ID.NONCE.SIGNATURE`; the nonce names the device in throttle keys.
It grants nothing by itself: the password is still checked on every sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from quart import Response, current_app, request

from .store import User

NONCE_BYTES = 16
MAX_COOKIE_LENGTH = 128


def derive_key(purpose: str) -> bytes:
    """A key for one purpose, derived from the app's SECRET_KEY (the same on every node)."""
    secret = str(current_app.config["SECRET_KEY"]).encode("utf-8")
    return hmac.new(secret, purpose.encode("ascii"), hashlib.sha256).digest()


def _signature(payload: str, user: User) -> str:
    """The cookie's MAC, over the payload and the account's creation time: an id SQLite
    gives again to a later account (after the newest one is deleted) does not make the
    old account's cookies known to the new one."""
    signed = f"{payload}.{user.created_at!r}"
    mac = hmac.new(derive_key("device-cookie"), signed.encode("ascii"), hashlib.sha256)
    return mac.hexdigest()[:32]


def cookie_name() -> str:
    return str(current_app.config["DEVICE_COOKIE_NAME"])


def device_nonce(user: User) -> str | None:
    """The nonce of this browser's device cookie when it is valid and names `user`.

    The signature is checked before the account is compared, so a cookie costs the same
    to judge whichever account is being signed in to.
    """
    value = request.cookies.get(cookie_name(), "")
    if not value or len(value) > MAX_COOKIE_LENGTH or not value.isascii():
        return None
    payload, _, signature = value.rpartition(".")
    expected = _signature(payload, user).encode("ascii")
    if not hmac.compare_digest(signature.encode("ascii"), expected):
        return None
    owner, _, nonce = payload.partition(".")
    return nonce if owner == str(user.id) else None


def set_device_cookie(response: Response, user: User) -> Response:
    """Give the browser a fresh device cookie for `user`."""
    payload = f"{user.id}.{secrets.token_urlsafe(NONCE_BYTES)}"
    secure = bool(current_app.config["SESSION_COOKIE_SECURE"]) or request.scheme == "https"
    response.set_cookie(
        cookie_name(),
        f"{payload}.{_signature(payload, user)}",
        max_age=int(current_app.config["DEVICE_COOKIE_LIFETIME"]),
        path="/",
        secure=secure,
        httponly=True,
        samesite="Lax",
    )
    return response
