"""Test helpers: real users and real stored sessions without bcrypt or the login form (SPEC §5),
a user with TOTP on and codes for it (SPEC §12), a clock to move and the mail that was sent.

Every helper needs a started app (`async with app.test_app():`); the pytest plugin
(`quart_auth_app.pytest_plugin`) gives one as the `auth_app` fixture, with these helpers as
fixtures around it.

client = await authenticated_client(app, "ada@example.com")
response = await client.get("/protected")
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import time
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .clock import now
from .mail.transport import FileTransport, text_links
from .services import services
from .sessions import new_token
from .store import SessionRecord, Store, User

if TYPE_CHECKING:
    from quart import Quart
    from quart.testing import QuartClient

# A bcrypt hash (cost 4) of a password nobody types: users made here sign in only by helper.
UNUSABLE_HASH = "$2b$04$" + "." * 53
NOT_STARTED = (
    "the app is not started: call {helper}() inside `async with app.test_app():`, "
    "or use the auth_app fixture of quart_auth_app's pytest plugin. (Used on an app that "
    "never started, the store opens database threads that nothing closes, and the test "
    "run never exits.)"
)


def started_store(app: Quart, helper: str = "this helper") -> Store:
    """The app's store, or RuntimeError if the app is not serving (started by test_app())."""
    found = services(app)
    if not found.touches.running:
        raise RuntimeError(NOT_STARTED.format(helper=helper))
    return found.store


async def create_user(
    app: Quart,
    email: str,
    name: str | None = None,
    password: str | None = None,
    verified: bool = False,
) -> User:
    """Insert a user; with a password it is hashed at the app's cost, else it is unusable."""
    store = started_store(app, "create_user")
    password_hash = UNUSABLE_HASH
    if password is not None:
        password_hash = await services(app).hasher.hash(password)
    user = await store.insert_user(
        email.lower(), name or email.split("@")[0], password_hash, now(app)
    )
    if user is None:
        raise ValueError(f"{email} already exists")
    if verified:
        engine: Any = store  # the engine's own call: no link to follow
        await engine.execute(
            "UPDATE users SET email_verified = :yes WHERE id = :id", {"yes": True, "id": user.id}
        )
        user = await store.select_user_by_id(user.id) or user
    return user


async def login_session(app: Quart, user: User, remember: bool = False) -> str:
    """Store a real session for `user` and return its cookie token."""
    store = started_store(app, "login_session")
    current = await store.select_user_by_id(user.id)  # its epoch now, not when `user` was read
    if current is None:
        raise ValueError(f"user {user.id} does not exist")
    token, token_hash = new_token()
    at = now(app)
    lifetime = app.config["REMEMBER_LIFETIME" if remember else "SESSION_LIFETIME"]
    await store.insert_session(
        SessionRecord(
            id=secrets.token_urlsafe(16),
            token_hash=token_hash,
            user_id=user.id,
            data={},
            remember=remember,
            created_at=at,
            last_seen=at,
            expires_at=at + float(lifetime),
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
        store = started_store(app, "authenticated_client")
        user = await store.select_user_by_email(user.lower()) or await create_user(app, user)
    token = await login_session(app, user, remember)
    client = cast("QuartClient", app.test_client())
    client.set_cookie("localhost", app.config["SESSION_COOKIE_NAME"], token)
    return client


async def enable_totp(app: Quart, user: User) -> str:
    """Turn TOTP on for `user` (no enrolment pages, no recovery codes); return its secret,
    for `totp_code`."""
    import pyotp

    from .factors import _fernet

    store = started_store(app, "enable_totp")
    secret = pyotp.random_base32()
    async with app.app_context():
        encrypted = _fernet().encrypt(secret.encode()).decode()
    await store.start_totp(user.id, encrypted, now(app))
    engine: Any = store  # the engine's own call: turning it on skips the enrolment's code
    await engine.execute(
        "UPDATE totp SET confirmed = :yes WHERE user_id = :id", {"yes": True, "id": user.id}
    )
    return secret


async def totp_secret(app: Quart, user: User) -> str:
    """The TOTP secret of `user`, however it was turned on (helper or enrolment pages)."""
    from .factors import _fernet

    found = await started_store(app, "totp_secret").select_totp(user.id)
    if found is None:
        raise ValueError(f"{user.email} has no TOTP secret")
    async with app.app_context():
        return _fernet().decrypt(found.secret.encode()).decode()


def totp_code(secret: str, at: float | None = None) -> str:
    """The 6-digit code an authenticator app shows for `secret` at `at` (default: now)."""
    import pyotp

    return pyotp.TOTP(secret).at(time.time() if at is None else at)


class Clock:
    """The app's now, moved by hand: the wall clock plus whatever `advance` added.

    Install it with `app.extensions["auth_clock"] = Clock()`; sessions, throttles, links and
    TOTP then expire by it, without sleeping.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def now(self) -> float:
        """The app's now, in seconds since the epoch."""
        return self()

    def advance(self, seconds: float) -> None:
        """Move the app's now `seconds` later."""
        self.offset += seconds


class SentMessage(EmailMessage):
    """A message as the app sent it, parsed; `links()` are what the user would click."""

    def links(self) -> list[str]:
        """The http(s) links of the plain-text part, in order."""
        return text_links(self)

    def paths(self) -> list[str]:
        """The links without scheme and host, for the test client: `/password/reset/...`."""
        return ["/" + link.split("/", 3)[3] for link in self.links()]


class Outbox:
    """The messages an app sent through its file transport (no MAIL_URL), oldest first."""

    def __init__(self, app: Quart) -> None:
        transport = services(app).mailer.transport
        if not isinstance(transport, FileTransport):
            raise RuntimeError("outbox reads the file transport's folder: leave MAIL_URL unset")
        self.app = app
        self.folder = transport.folder

    @property
    def messages(self) -> list[SentMessage]:
        """Every message delivered so far."""
        if not self.folder.is_dir():
            return []
        return [_parse(path) for path in sorted(self.folder.glob("*.eml"))]

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index: int) -> SentMessage:
        return self.messages[index]

    async def wait_for(self, count: int = 1, within: float = 5.0) -> list[SentMessage]:
        """Wait (on the test's loop, where the sender runs) until `count` messages are sent."""
        found = self.messages
        try:
            async with asyncio.timeout(within):
                while len(found) < count:
                    services(self.app).mailer.wake()
                    await asyncio.sleep(0.01)
                    found = self.messages
        except TimeoutError:
            subjects = [message["Subject"] for message in found]
            raise AssertionError(
                f"{count} message(s) expected within {within} s; sent: {subjects}"
            ) from None
        return found


def _parse(path: Path) -> SentMessage:
    parsed = email.message_from_bytes(
        path.read_bytes(), _class=SentMessage, policy=email.policy.default
    )
    return cast(SentMessage, parsed)
