"""Test helpers: real users and real stored sessions without bcrypt or the login form (SPEC §5),
and a user with TOTP on with codes for it (SPEC §12).

client = await authenticated_client(app, "ada@example.com")
response = await client.get("/protected")
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, cast

from .sessions import new_token
from .store import SessionRecord, Store, User

if TYPE_CHECKING:
    from quart import Quart
    from quart.testing import QuartClient

# A bcrypt hash (cost 4) of a password nobody types: users made here sign in only by helper.
UNUSABLE_HASH = "$2b$04$" + "." * 53


async def create_user(
    app: Quart, email: str, name: str | None = None, password: str | None = None
) -> User:
    """Insert a user; with a password it is hashed at the app's cost, else it is unusable."""
    store: Store = app.extensions["auth_store"]
    password_hash = UNUSABLE_HASH
    if password is not None:
        password_hash = await app.extensions["auth_hasher"].hash(password)
    user = await store.insert_user(
        email.lower(), name or email.split("@")[0], password_hash, time.time()
    )
    if user is None:
        raise ValueError(f"{email} already exists")
    return user


async def login_session(app: Quart, user: User, remember: bool = False) -> str:
    """Store a real session for `user` and return its cookie token."""
    store: Store = app.extensions["auth_store"]
    current = await store.select_user_by_id(user.id)  # its epoch now, not when `user` was read
    if current is None:
        raise ValueError(f"user {user.id} does not exist")
    token, token_hash = new_token()
    now = time.time()
    lifetime = app.config["REMEMBER_LIFETIME" if remember else "SESSION_LIFETIME"]
    await store.insert_session(
        SessionRecord(
            id=secrets.token_urlsafe(16),
            token_hash=token_hash,
            user_id=user.id,
            data={},
            remember=remember,
            created_at=now,
            last_seen=now,
            expires_at=now + float(lifetime),
            user_agent="test client",
            ip="127.0.0.1",
            epoch=current.epoch,
            device="Test client",
        )
    )
    return token


async def authenticated_client(app: Quart, user: User | str, remember: bool = False) -> QuartClient:
    """A test client signed in as `user` (a User, or the email of one to create)."""
    if isinstance(user, str):
        store: Store = app.extensions["auth_store"]
        user = await store.select_user_by_email(user.lower()) or await create_user(app, user)
    token = await login_session(app, user, remember)
    client = cast("QuartClient", app.test_client())
    client.set_cookie("localhost", app.config["SESSION_COOKIE_NAME"], token)
    return client


async def enable_totp(app: Quart, user: User) -> str:
    """Turn TOTP on for `user` (no enrolment pages, no recovery codes); return its secret,
    for `totp_code`. Inside the app's context, as the rest of this module."""
    import pyotp

    from .factors import _fernet

    store: Store = app.extensions["auth_store"]
    secret = pyotp.random_base32()
    async with app.app_context():
        encrypted = _fernet().encrypt(secret.encode()).decode()
    await store.start_totp(user.id, encrypted, time.time())
    engine: Any = store  # the engine's own call: turning it on skips the enrolment's code
    await engine.execute(
        "UPDATE totp SET confirmed = :yes WHERE user_id = :id", {"yes": True, "id": user.id}
    )
    return secret


def totp_code(secret: str, at: float | None = None) -> str:
    """The 6-digit code an authenticator app shows for `secret` at `at` (default: now)."""
    import pyotp

    return pyotp.TOTP(secret).at(time.time() if at is None else at)
