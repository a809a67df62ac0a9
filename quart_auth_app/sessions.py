"""Server-side sessions behind Quart's `session` and `flash()` (SPEC §5).

The cookie carries only a random token; the database keys the row by the
token's SHA-256, so a copy of the database cannot be replayed as cookies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from quart import request
from quart.sessions import SessionInterface, SessionMixin
from quart.wrappers import BaseRequestWebsocket, Response

from . import clock
from .agents import describe
from .store import Expiry, SessionRecord, Store, StoreUnavailable, User
from .touches import Touches

if TYPE_CHECKING:
    from quart import Quart

log = logging.getLogger(__name__)

TOKEN_BYTES = 32  # 256 bits from `secrets`
MAX_COOKIE_LENGTH = 128
MAX_AGENT_LENGTH = 512
TOUCH_EVERY_MAX = 60.0  # last_seen is refreshed at least this often (seconds)...
TOUCH_FRACTION = 0.1  # ...and at least every tenth of the idle timeout
FLASHES = "_flashes"  # where Quart's flash() keeps its messages
PROVED_AT = "_proved_at"  # when the owner last typed their password (re-authentication)
PENDING = (
    "_pending"  # a right password awaiting its second factor: [user id, remember, epoch, until]
)


def hash_token(token: str) -> bytes:
    """The key a token is stored under."""
    return hashlib.sha256(token.encode("ascii")).digest()


def new_token() -> tuple[str, bytes]:
    """A fresh cookie token and its hash."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_token(token)


def expiry(config: Any, now: float) -> Expiry:
    """The cut-offs that make a session dead at `now`."""
    return Expiry(now=now, idle_cutoff=now - float(config["SESSION_IDLE_TIMEOUT"]))


class ServerSession(dict[str, Any], SessionMixin):
    """The session dict plus what the store needs to save it."""

    def __init__(self, record: SessionRecord | None = None) -> None:
        super().__init__(record.data if record else {})
        self.record = record
        self.user: User | None = record.user if record else None
        self.unavailable = False  # the store did not answer while loading
        self.stale_cookie = False  # the request carried a cookie that matched no live row
        self.login_as: tuple[User, bool] | None = None  # (user, remember): rotate on save
        self.ended = False  # logged out: the old row is gone, start afresh
        self._snapshot = {key: json.dumps(value) for key, value in self.items()}

    @property
    def token_hash(self) -> bytes | None:
        return self.record.token_hash if self.record and not self.ended else None

    def rotate(self, user: User, remember: bool | None = None) -> None:
        """Sign `user` in (or carry them on after a credential change): the session moves to
        a new token when the response is saved. `remember` None keeps this session's choice."""
        if remember is None:
            remember = self.record.remember if self.record else False
        self.login_as = (user, remember)
        self.user = user
        self.confirm_identity()

    def confirm_identity(self) -> None:
        """Its owner just proved who they are (a password typed): sensitive actions are
        open for REAUTH_WINDOW from now (SPEC §12)."""
        self[PROVED_AT] = clock.now()

    def proved_within(self, seconds: float) -> bool:
        """Whether the owner proved who they are in the last `seconds`."""
        proved = self.get(PROVED_AT)
        return isinstance(proved, int | float) and clock.now() - proved < seconds

    def begin_pending(self, user: User, remember: bool, until: float) -> None:
        """A right password for an account with a second factor: nobody is signed in yet;
        /login/verify finishes it until `until` (SPEC §12)."""
        self[PENDING] = [user.id, remember, user.epoch, until]

    def pending(self, now: float) -> tuple[int, bool, int] | None:
        """(user id, remember, epoch) of a sign-in awaiting its second factor, if any."""
        value = self.get(PENDING)
        if not isinstance(value, list) or len(value) != 4 or not value[3] > now:
            return None
        return int(value[0]), bool(value[1]), int(value[2])

    def end_pending(self) -> None:
        self.pop(PENDING, None)

    def end(self) -> None:
        """Signed out: the data goes and the cookie ends with the response (the caller has
        deleted the row); anything stored after this starts a new anonymous session."""
        self.clear()
        self.user, self.login_as, self.ended = None, None, True

    def bound(self, max_flashes: int, max_bytes: int) -> None:
        """Keep the data small: the newest `max_flashes` flashes, and the oldest ones
        dropped while the data is over `max_bytes` (an API client never reads them)."""
        flashes = self.get(FLASHES)
        if not isinstance(flashes, list):
            return
        if len(flashes) > max_flashes:
            flashes = self[FLASHES] = flashes[-max_flashes:]
        while flashes and len(json.dumps(self)) > max_bytes:
            flashes = self[FLASHES] = flashes[1:]

    def changes(self) -> tuple[dict[str, Any], list[str]]:
        """Keys set or changed since load, and keys removed (in-place edits included)."""
        changed = {
            key: value
            for key, value in self.items()
            if self._snapshot.get(key) != json.dumps(value)
        }
        removed = [key for key in self._snapshot if key not in self]
        return changed, removed


def client_meta() -> tuple[str, str]:
    """The current request's user agent (printable, bounded) and client address."""
    agent = request.headers.get("User-Agent", "")[:MAX_AGENT_LENGTH]  # bounded before any work
    agent = "".join(ch for ch in agent if ch.isprintable())
    return agent, (request.remote_addr or "")[:64]


class ServerSessionInterface(SessionInterface):
    """Loads the session row named by the cookie; saves changes atomically (merge)."""

    session_class = ServerSession

    def __init__(self, store: Store) -> None:
        self.store = store
        self.touches = Touches(store)  # last_seen, written behind the response

    def get_cookie_secure(self, app: Quart) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.scheme == "https"

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> ServerSession:
        token = request.cookies.get(self.get_cookie_name(app))
        if not token:
            return ServerSession()
        if len(token) > MAX_COOKIE_LENGTH or not token.isascii():
            return self._stale()
        try:
            record = await self.store.select_session_by_hash(hash_token(token))
        except StoreUnavailable:
            log.warning("session store unavailable while loading a session")
            session = ServerSession()
            session.unavailable = True
            return session
        now = clock.now(app)
        if record is None or not self.alive(app, record, now):
            return self._stale()
        return ServerSession(record)

    @staticmethod
    def _stale() -> ServerSession:
        session = ServerSession()
        session.stale_cookie = True
        return session

    @staticmethod
    def alive(app: Quart, record: SessionRecord, now: float) -> bool:
        """Whether a stored session still counts: not past its absolute expiry, made since
        its user's credentials last changed, not idle too long unless remembered."""
        if record.expires_at <= now:
            return False
        if record.user is not None and record.user.epoch != record.epoch:
            return False  # made before the user's credentials last changed (SPEC §5)
        idle = float(app.config["SESSION_IDLE_TIMEOUT"])
        return record.remember or record.last_seen > now - idle

    async def save_session(  # type: ignore[override]
        self, app: Quart, session: ServerSession, response: Response
    ) -> None:
        if session.unavailable:
            return
        try:
            await self._save(app, session, response)
        except StoreUnavailable:
            session.unavailable = True  # the 503 page's own save must not try again
            raise

    async def _save(self, app: Quart, session: ServerSession, response: Response) -> None:
        now = clock.now(app)
        session.bound(int(app.config["SESSION_MAX_FLASHES"]), int(app.config["SESSION_MAX_BYTES"]))
        if session.login_as is not None:
            await self._start(app, session, response, now)
        elif session.token_hash is None:
            if session:
                await self._start(app, session, response, now)
            elif session.ended or session.stale_cookie:
                self._end_cookie(app, response)
        elif not session and session.user is None:
            await self.store.delete_session_by_hash(session.token_hash)
            self._end_cookie(app, response)
        else:
            await self._update(app, session, now)

    async def _start(
        self, app: Quart, session: ServerSession, response: Response, now: float
    ) -> None:
        """Store the session under a new token (sign-in, or first data) and set the cookie."""
        user, remember = session.login_as or (session.user, False)
        lifetime = app.config["REMEMBER_LIFETIME" if remember else "SESSION_LIFETIME"]
        token, token_hash = new_token()
        agent, ip = client_meta()
        record = SessionRecord(
            id=secrets.token_urlsafe(16),
            token_hash=token_hash,
            user_id=user.id if user else None,
            data=dict(session),
            remember=remember,
            created_at=now,
            last_seen=now,
            expires_at=now + float(lifetime),
            user_agent=agent,
            ip=ip,
            epoch=user.epoch if user else 0,
            device=describe(agent),
        )
        keep = int(app.config["MAX_SESSIONS_PER_USER"])
        evicted = await self.store.replace_session(session.token_hash, record, keep)
        if evicted and user is not None:  # the least recently used ones ended (SPEC §7)
            await self.store.insert_event(
                user.id, "session limit reached", ip, agent, now, record.device
            )
        session.record, session.user, session.ended = record, user, False
        response.set_cookie(
            self.get_cookie_name(app),
            token,
            max_age=int(lifetime) if remember else None,
            path="/",
            secure=self.get_cookie_secure(app),
            httponly=True,
            samesite="Lax",
        )

    async def _update(self, app: Quart, session: ServerSession, now: float) -> None:
        record = session.record
        if record is None:  # only stored sessions get here
            return
        changed, removed = session.changes()
        if changed or removed:
            await self.store.merge_session_data(record.token_hash, changed, removed, now)
            return
        idle = float(app.config["SESSION_IDLE_TIMEOUT"])
        if now - record.last_seen >= min(TOUCH_EVERY_MAX, idle * TOUCH_FRACTION):
            await self.touches.touch(record.token_hash, now)

    def _end_cookie(self, app: Quart, response: Response) -> None:
        response.delete_cookie(
            self.get_cookie_name(app),
            path="/",
            secure=self.get_cookie_secure(app),
            httponly=True,
            samesite="Lax",
        )
