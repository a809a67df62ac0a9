"""Bounded cost (SPEC §7) once signed in, and for a user who has accumulated all he may.

The search of tests/test_cost.py, extended to every route a signed-in session reaches, each
request carrying a real stored session of a user at the state's limits: MAX_SESSIONS_PER_USER
sessions whose user agents are crafted to be slow to parse, security events with such agents,
unread flashes. No request may cost more than BUDGET_MS of CPU besides bcrypt and zxcvbn.

How bcrypt is counted: every run is timed in its own thread and left out of the request's
cost; a route may run it at most `bcrypt_runs` times (the password change twice: the check
of the current password and the new hash; a sign-in once). zxcvbn is timed the same way
and bounded by test_cost.STRENGTH_BUDGET_MS.

Caches are cold for every measurement: an attacker's agents outnumber the device name cache
(256) and the parser's own (200), so a warm cache would only hide a per-render cost.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import cbor2
import pytest
from conftest import PASSWORD
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st
from quart import Quart
from test_cost import (
    AT,
    BODY_LIMIT,
    HEAD_LIMIT,
    P61,
    STRENGTH_BUDGET_MS,
    UP,
    UV,
    Ceremony,
    _auth_data,
    _colliding,
    _head,
    _multipart,
    _run,
    _shared,
    add_passkey,
    big_text,
    chunks,
    cpu_ms,
    credentials,
    heads,
    query_strings,
    set_throttle,
    warmed,
)
from test_passkeys import Authenticator, b64
from ua_parser import user_agent_parser
from zxcvbn import zxcvbn

from quart_auth_app import passwords
from quart_auth_app.agents import describe
from quart_auth_app.passkey_ceremony import user_handle
from quart_auth_app.sessions import PROVED_AT, expiry, new_token
from quart_auth_app.store import NewEvent, Outgoing, SessionRecord, Store, User
from quart_auth_app.testing import create_user, enable_totp, totp_code

BUDGET_MS = 50.0  # SPEC §7: CPU per request, all of it, besides bcrypt (and zxcvbn)
CAP = 100  # MAX_SESSIONS_PER_USER's default
EVENTS = 25  # more than EVENTS_SHOWN: /account shows a full table of them
CRAFTED = "Mozilla/5.0 (" + "a;" * 250 + ")"  # ~7 ms per parse at 512 characters
STRONG = "a long enough passphrase 42"
EXAMPLES = int(os.environ.get("QUART_AUTH_COST_EXAMPLES", "150"))

SEARCH = settings(
    max_examples=max(1, EXAMPLES // 6),  # per route
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GROWTH = settings(SEARCH, max_examples=max(1, EXAMPLES // 25))
LIGHT = settings(SEARCH, max_examples=max(1, EXAMPLES // 15))  # routes that read no fields


@pytest.fixture
def db_config(tmp_path: Any) -> dict[str, Any]:
    """SQLite only, as in tests/test_cost.py."""
    return {"DATABASE": str(tmp_path / "app.sqlite3")}


@pytest.fixture
async def warm_app(app: Quart) -> AsyncIterator[Quart]:
    async with warmed(app):
        yield app


# --- measuring ------------------------------------------------------------------------------


class Clocks:
    """CPU time inside bcrypt and zxcvbn, in whichever thread they ran, and bcrypt's runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bcrypt_ms = self.strength_ms = 0.0
        self.bcrypt_runs = 0
        real_hash, real_check = passwords.hash_password, passwords.check_password

        def timed_bcrypt(real: Callable[..., Any]) -> Callable[..., Any]:
            def run(*args: Any) -> Any:
                start = time.thread_time()
                try:
                    return real(*args)
                finally:
                    self.bcrypt_ms += (time.thread_time() - start) * 1000
                    self.bcrypt_runs += 1

            return run

        def timed_strength(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return zxcvbn(*args, **kwargs)
            finally:
                self.strength_ms += (time.thread_time() - start) * 1000

        monkeypatch.setattr(passwords, "hash_password", timed_bcrypt(real_hash))
        monkeypatch.setattr(passwords, "check_password", timed_bcrypt(real_check))
        monkeypatch.setattr(passwords, "zxcvbn", timed_strength)

    def reset(self) -> None:
        self.bcrypt_ms = self.strength_ms = 0.0
        self.bcrypt_runs = 0


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> Clocks:
    return Clocks(monkeypatch)


@dataclass(frozen=True)
class Cost:
    summary: str
    status: int
    own_ms: float  # the request's CPU besides bcrypt and zxcvbn
    bcrypt_ms: float
    bcrypt_runs: int
    strength_ms: float

    def within(self, bcrypt_runs: int) -> bool:
        return (
            self.own_ms <= BUDGET_MS
            and self.strength_ms <= STRENGTH_BUDGET_MS
            and self.bcrypt_runs <= bcrypt_runs
        )

    def check(self, bcrypt_runs: int) -> None:
        assert self.status < 500, self.summary
        assert self.own_ms <= BUDGET_MS, f"{self.summary}: {self.own_ms:.1f} ms of CPU"
        assert self.strength_ms <= STRENGTH_BUDGET_MS, f"{self.summary}: zxcvbn {self.strength_ms}"
        assert self.bcrypt_runs <= bcrypt_runs, f"{self.summary}: {self.bcrypt_runs} bcrypt runs"


def cold_caches(app: Quart) -> None:
    """Forget every parsed user agent: the device name cache and the parser's own."""
    for function in app.jinja_env.filters.values():
        clear = getattr(function, "cache_clear", None)
        if clear is not None:
            clear()
    getattr(user_agent_parser, "_PARSE_CACHE", {}).clear()


async def measure(
    app: Quart,
    prepare: Callable[[], Awaitable[dict[str, Any]]],
    clocks: Clocks,
    bcrypt_runs: int,
) -> Cost:
    """The cheapest of up to five runs of a request, each prepared afresh (a new session,
    the state restored) and measured with cold caches."""
    best: Cost | None = None
    for attempt in range(5):
        request = await prepare()
        await asyncio.sleep(0.001 * (1 << attempt))  # work queued by earlier responses runs
        cold_caches(app)
        clocks.reset()
        status, spent = await cpu_ms(app, request)
        cost = Cost(
            f"{request['method']} {request['path'][:60]} -> {status}",
            status,
            spent - clocks.bcrypt_ms - clocks.strength_ms,
            clocks.bcrypt_ms,
            clocks.bcrypt_runs,
            clocks.strength_ms,
        )
        if best is None or cost.own_ms + cost.strength_ms < best.own_ms + best.strength_ms:
            best = cost
        if best.within(bcrypt_runs):
            break
    assert best is not None
    return best


# --- a user at the limits -------------------------------------------------------------------


def store_of(app: Quart) -> Store:
    store: Store = app.extensions["auth_store"]
    return store


def crafted(i: int) -> str:
    """A distinct agent per session, each as slow to parse as the crafted one."""
    return f"Mozilla/5.0 ({i};" + CRAFTED[len("Mozilla/5.0 (") :]


async def add_session(
    app: Quart, user: User, agent: str, device: str, data: dict[str, Any] | None = None
) -> tuple[str, SessionRecord]:
    """Store a live session of `user` as a sign-in would have; its token and row."""
    current = await store_of(app).select_user_by_id(user.id)
    assert current is not None
    token, token_hash = new_token()
    now = time.time()
    record = SessionRecord(
        id=secrets.token_urlsafe(16),
        token_hash=token_hash,
        user_id=user.id,
        data=data or {},
        remember=True,
        created_at=now,
        last_seen=now,
        expires_at=now + float(app.config["REMEMBER_LIFETIME"]),
        user_agent=agent,
        ip="203.0.113.7",
        epoch=current.epoch,
        device=device,
    )
    await store_of(app).insert_session(record)
    return token, record


async def live_sessions(app: Quart, user: User) -> list[SessionRecord]:
    return await store_of(app).select_sessions_of_user(
        user.id, expiry(app.config, time.time()), CAP * 2
    )


@functools.cache
def stored_device(agent: str) -> str:
    """The device name a sign-in from `agent` stores (worked out once per test run, in a
    cache of its own: cold_caches() empties the app's)."""
    return describe(agent)


@dataclass
class Standing:
    """Ada at the limits: CAP sessions and a full page of events, all with crafted agents,
    and a passkey."""

    user: User
    password_hash: str
    devices: dict[str, str]  # agent -> the device name the app stored for it
    passkey: Authenticator
    own: SessionRecord | None = None
    totp_secret: str = ""

    async def restore(
        self, app: Quart, data: dict[str, Any], totp: str = ""
    ) -> tuple[str, SessionRecord]:
        """Undo what the last request changed (a password, revocations, a passkey, TOTP, the
        account itself); TOTP as `totp` asks ("pending", "on", or as it is); a fresh own
        session carrying `data`; CAP sessions in all."""
        store = store_of(app)
        current = await store.select_user_by_id(self.user.id)
        if current is None:  # deleted: Ada signs up again
            self.user = await new_standing_user(app, self.devices)
            self.password_hash, self.passkey = self.user.password_hash, Authenticator()
            self.own = None
        elif current.password_hash != self.password_hash:
            await store.change_user_password(self.user.id, self.password_hash, None)
        await self.restore_passkeys(app)
        if totp:
            await self.restore_totp(app, totp)
        if self.own is not None:
            await store.delete_session_by_hash(self.own.token_hash)
        alive = len(await live_sessions(app, self.user))
        for i in range(alive, CAP - 1):
            agent = crafted(i)
            await add_session(app, self.user, agent, self.devices[agent])
        token, self.own = await add_session(app, self.user, crafted(CAP), "Test client", data)
        return token, self.own

    async def restore_passkeys(self, app: Quart) -> None:
        """Ada's one passkey, and no other (a registration would add more, up to a refusal)."""
        engine: Any = store_of(app)  # the engine's own call, as quart_auth_app.testing's
        await engine.execute(
            "DELETE FROM passkeys WHERE user_id = :id AND id <> :keep",
            {"id": self.user.id, "keep": self.passkey.id},
        )
        if not await store_of(app).select_passkeys_of_user(self.user.id):
            self.passkey.user_handle = b64(user_handle(self.user))
            await add_passkey(app, self.user.id, self.passkey)

    async def restore_totp(self, app: Quart, state: str) -> None:
        """TOTP on, or begun and awaiting its first code: the state the route acts on."""
        store = store_of(app)
        found = await store.select_totp(self.user.id)
        if found is not None and found.confirmed == (state == "on"):
            return
        if found is not None:
            event = NewEvent("two-step sign-in turned off", "203.0.113.7", "", "")
            notice = Outgoing("totp_disabled", self.user.email, {"name": self.user.name})
            assert await store.disable_totp(self.user.id, None, event, notice, time.time())
        self.totp_secret = await enable_totp(app, self.user)
        if state == "pending":
            engine: Any = store
            await engine.execute(
                "UPDATE totp SET confirmed = :no WHERE user_id = :id",
                {"no": False, "id": self.user.id},
            )


async def new_standing_user(app: Quart, devices: dict[str, str]) -> User:
    """Ada, with a full page of events from crafted agents."""
    user = await create_user(app, "ada@example.com", "Ada", PASSWORD)
    for i in range(EVENTS):
        agent = crafted(CAP + i)
        await store_of(app).insert_event(
            user.id, "sign-in failed", "203.0.113.9", agent, time.time(), devices[agent]
        )
    return user


@pytest.fixture
async def standing(warm_app: Quart) -> Standing:
    devices = {crafted(i): stored_device(crafted(i)) for i in range(CAP + EVENTS)}
    user = await new_standing_user(warm_app, devices)
    return Standing(user, user.password_hash, devices, Authenticator())


# --- the signed-in routes -------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "{id}" stands for a session id, "{passkey}" for a passkey's
    fields: tuple[str, ...] = ()
    bcrypt_runs: int = 0  # allowed
    proved: bool = False  # needs a password typed within REAUTH_WINDOW: mostly given
    totp: str = ""  # the TOTP state it acts on: "pending" (begun, unconfirmed) or "on"


PASSWORD_FIELDS = ("current_password", "new_password")
ROUTES = [
    Route("GET", "/"),
    Route("GET", "/protected"),
    Route("GET", "/account"),
    Route("GET", "/logout"),
    Route("GET", "/login"),
    Route("GET", "/register"),
    Route("GET", "/api/me"),
    Route("GET", "/api/sessions"),
    Route("GET", "/openapi.json"),
    Route("POST", "/account/sessions/{id}/revoke"),
    Route("POST", "/account/sessions/revoke-others"),
    Route("POST", "/account/password", PASSWORD_FIELDS, 2),
    Route("POST", "/logout"),
    Route("POST", "/login", ("email", "password", "next", "remember"), 1),
    Route("DELETE", "/api/sessions/{id}"),
    Route("POST", "/api/sessions/revoke-others"),
    Route("POST", "/api/password", PASSWORD_FIELDS, 2),
    Route("POST", "/api/logout"),
    Route("POST", "/api/login", ("email", "password", "remember"), 1),
    # the account's life (SPEC §11, §12); a deleted Ada signs up again (Standing.restore)
    Route("GET", "/api/me/export"),
    Route("GET", "/account/export"),
    Route("GET", "/account/email", proved=True),
    Route("GET", "/account/delete", proved=True),
    Route("POST", "/api/email/verify/resend"),
    Route("POST", "/api/email", ("new_email", "current_password"), 1, proved=True),
    Route("POST", "/api/reauthenticate", ("password",), 1),
    Route("DELETE", "/api/me", ("password",), 1, proved=True),
    Route("POST", "/reauthenticate", ("password", "next"), 1),
    Route("POST", "/account/email", ("new_email", "current_password"), 1, proved=True),
    Route("POST", "/account/delete", ("password",), 1, proved=True),
    # second factors and passkeys (SPEC §12)
    Route("POST", "/api/2fa/totp/confirm", ("code",), totp="pending"),
    Route("DELETE", "/api/2fa/totp", proved=True, totp="on"),
    Route("POST", "/account/two-step/confirm", ("code",), totp="pending"),
    Route("POST", "/account/two-step/disable", proved=True, totp="on"),
    Route("POST", "/api/passkeys", ("credential", "name"), proved=True),
    Route("DELETE", "/api/passkeys/{passkey}", proved=True),
    Route("POST", "/account/passkeys/{passkey}/rename", ("name",)),
    Route("POST", "/account/passkeys/{passkey}/remove", proved=True),
]
# Newer routes that read no fields (the session, the head, at most an id): a shorter search.
LIGHT_ROUTES = [
    Route("GET", "/reauthenticate"),
    Route("POST", "/account/email/resend"),
    Route("GET", "/email/unverified"),
    Route("POST", "/api/2fa/totp", proved=True),
    Route("POST", "/api/2fa/recovery-codes", proved=True, totp="on"),
    Route("GET", "/account/two-step", proved=True, totp="on"),
    Route("POST", "/account/two-step/begin", proved=True),
    Route("POST", "/account/two-step/recovery-codes", proved=True, totp="on"),
    Route("GET", "/api/passkeys"),
    Route("POST", "/api/passkeys/register/options", proved=True),
    Route("GET", "/account/passkeys/{passkey}/remove", proved=True),
]
CODE_NOW = "CODENOW"  # in a drawn body: replaced by the current TOTP code when it is sent


def plausible(field: str) -> st.SearchStrategy[Any]:
    """Values that pass the field's checks (the deep path), or hostile text."""
    known: dict[str, st.SearchStrategy[Any]] = {
        "email": st.just("ada@example.com"),
        "password": st.just(PASSWORD),
        "current_password": st.just(PASSWORD),
        "new_email": st.builds(lambda n: f"ada{n}@example.org", st.integers(0)),
        "new_password": st.one_of(
            st.builds(lambda n: f"{STRONG} {n}", st.integers(0)),
            st.builds(_run, chunks, st.integers(8, 1024), st.just(1024)),
        ),
        "remember": st.booleans(),
        "next": st.sampled_from(["/account", "/protected?x=1"]),
        "code": st.sampled_from([CODE_NOW, CODE_NOW, "000000", " 123 456 ", "abcd-efgh"]),
        "name": st.text("abc xyz é\u0301", max_size=80),
    }
    return known.get(field, st.just(""))


@st.composite
def bodies(draw: st.DrawFn, route: Route, ceremony: Ceremony | None = None) -> tuple[bytes, str]:
    """The route's fields (one possibly huge) and stray ones; for the API, JSON or nothing."""
    focus = draw(st.sampled_from(route.fields)) if route.fields else ""
    fields: list[tuple[str, Any]] = []
    for name in route.fields:
        if name == "credential":  # valid, hostile inside, or anything at all
            fields.append((name, draw(credentials(ceremony))))
        elif draw(st.booleans()):
            fields.append((name, draw(plausible(name))))
        elif draw(st.booleans()):
            fields.append((name, draw(big_text(BODY_LIMIT // 3 if name == focus else 256))))
    fields += [("x", "")] * draw(st.one_of(st.just(0), st.integers(0, BODY_LIMIT // 3)))
    if route.path.startswith("/api/"):
        if not fields and draw(st.booleans()):
            return b"", ""  # bodiless, as curl -X POST sends
        payload = json.dumps(dict(fields), ensure_ascii=not draw(st.booleans()))
        return payload.encode("utf-8", "surrogatepass"), "application/json"
    texts = [(k, v if isinstance(v, str) else "on" if v else "") for k, v in fields]
    if draw(st.booleans()):
        return _multipart(texts), "multipart/form-data; boundary=B"
    body = urlencode(texts, encoding="utf-8", errors="surrogatepass")
    return body.encode("ascii"), "application/x-www-form-urlencoded"


@st.composite
def queries(draw: st.DrawFn, route: Route) -> str:
    """Paging parameters (in range, past it, huge) or test_cost's hostile ones."""
    numbers = st.one_of(
        st.integers(0, 200).map(str),
        st.sampled_from(["99999", "100000", "-1", "1e9", "9" * 4000, "0x10", " 1"]),
        big_text(HEAD_LIMIT // 8).map(lambda s: quote(s, safe="")),
    )
    if route.path == "/account" and draw(st.booleans()):
        return "?page=" + draw(numbers)
    if route.path == "/api/sessions" and draw(st.booleans()):
        return f"?limit={draw(numbers)}&offset={draw(numbers)}"
    return draw(query_strings())


@st.composite
def requests(draw: st.DrawFn, route: Route, ceremony: Ceremony | None = None) -> dict[str, Any]:
    """A request of the signed-in user: the cookie, {id} and {passkey} are filled in per run."""
    body, content_type = (b"", "") if route.method == "GET" else draw(bodies(route, ceremony))
    headers = draw(heads())
    extra = headers.pop("Cookie", "")
    if extra.startswith("session="):
        extra = "device=" + extra[len("session=") :]  # a forged device cookie instead
    if content_type:
        headers["Content-Type"] = content_type
    target_id = draw(st.sampled_from(["other", "own", "missing", "hostile"]))
    if target_id == "hostile":
        target_id = quote(_head(draw(big_text(HEAD_LIMIT // 4))), safe="")
    return {
        "method": route.method,
        "path": route.path + draw(queries(route)),
        "body": body,
        "headers": headers,
        "cookies": extra,
        "session_id": target_id,
        "throttled": draw(st.booleans()),
        "flashes": draw(st.integers(0, 10)),
        "proved": route.proved and draw(st.integers(0, 3)) > 0,
    }


async def registration_ceremony(app: Quart, standing: Standing) -> Ceremony | None:
    """Fresh creation options for Ada, as the account page asks for them."""
    token, _ = await standing.restore(app, {PROVED_AT: time.time()})
    response = await app.test_client().post(
        "/api/passkeys/register/options", headers={"Cookie": f"session={token}"}
    )
    if response.status_code != 200:
        return None
    return Ceremony(await response.get_json(), Authenticator())


def flashes(count: int) -> dict[str, Any]:
    """Session data holding `count` unread flash messages, the size cap's worth."""
    message = "Welcome, " + "Ada" * 100 + "!"
    return {"_flashes": [["success", message[:380]] for _ in range(count)]} if count else {}


def set_session_writes(app: Quart, throttled: bool) -> None:
    app.config["THROTTLE_SESSION_WRITES"] = 0 if throttled else 1_000_000


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
@SEARCH
@given(data=st.data())
async def test_no_signed_in_request_costs_more_than_the_budget(
    warm_app: Quart, standing: Standing, clocks: Clocks, route: Route, data: st.DataObject
) -> None:
    """A search per route, for a user at every limit, steered by target() on the CPU."""
    await search_once(warm_app, standing, clocks, route, data)


@pytest.mark.parametrize("route", LIGHT_ROUTES, ids=[f"{r.method} {r.path}" for r in LIGHT_ROUTES])
@LIGHT
@given(data=st.data())
async def test_no_light_signed_in_request_costs_more_than_the_budget(
    warm_app: Quart, standing: Standing, clocks: Clocks, route: Route, data: st.DataObject
) -> None:
    """The same search, shorter, for routes that read no fields."""
    await search_once(warm_app, standing, clocks, route, data)


async def search_once(
    warm_app: Quart, standing: Standing, clocks: Clocks, route: Route, data: st.DataObject
) -> None:
    """One request of the search: drawn, measured, steered towards the costliest."""
    ceremony = None
    if "credential" in route.fields:  # answers to fresh options, from a new authenticator
        ceremony = await registration_ceremony(warm_app, standing)
    drawn = data.draw(requests(route, ceremony))
    set_throttle(warm_app, drawn["throttled"])
    set_session_writes(warm_app, drawn["throttled"])

    async def prepare() -> dict[str, Any]:
        session_data = flashes(drawn["flashes"])
        if drawn["proved"]:
            session_data[PROVED_AT] = time.time()
        token, own = await standing.restore(warm_app, session_data, route.totp)
        others = [s.id for s in await live_sessions(warm_app, standing.user) if s.id != own.id]
        ids = {"other": others[0], "own": own.id, "missing": secrets.token_urlsafe(16)}
        session_id = ids.get(drawn["session_id"], drawn["session_id"])
        passkeys = {"other": standing.passkey.id, "own": standing.passkey.id}
        passkey_id = passkeys.get(drawn["session_id"], session_id)
        cookie = "; ".join(part for part in (f"session={token}", drawn["cookies"]) if part)
        body = drawn["body"]
        if route.totp:
            body = body.replace(CODE_NOW.encode(), totp_code(standing.totp_secret).encode())
        return {
            **drawn,
            "path": drawn["path"].replace("{id}", session_id).replace("{passkey}", passkey_id),
            "headers": {**drawn["headers"], "Cookie": cookie},
            "body": body,
        }

    cost = await measure(warm_app, prepare, clocks, route.bcrypt_runs)
    event(f"{cost.status}")
    target(cost.own_ms, label="CPU ms besides bcrypt and zxcvbn")
    target(cost.strength_ms, label="zxcvbn CPU ms")
    cost.check(route.bcrypt_runs)


# hostile CBOR where a registration's credential key goes (in authData, in attestationObject)
REGISTRATION_REGRESSIONS = {
    # tags 28/29: 22 levels of a list holding the previous one twice re-encode to 4 Mi items
    "shared values": _shared(22),
    "colliding map keys": _colliding(1400, P61),
}


@pytest.mark.parametrize("key", REGISTRATION_REGRESSIONS.values(), ids=REGISTRATION_REGRESSIONS)
async def test_known_expensive_registrations_are_cheap(
    warm_app: Quart, standing: Standing, clocks: Clocks, key: bytes
) -> None:
    ceremony = await registration_ceremony(warm_app, standing)
    assert ceremony is not None
    credential = ceremony.answer()
    authenticator = ceremony.authenticator
    attested = bytes(16) + len(authenticator.credential_id).to_bytes(2, "big")
    auth_data = _auth_data(UP | UV | AT, attested + authenticator.credential_id + key)
    attestation = {"fmt": "none", "attStmt": {}, "authData": auth_data}
    credential["response"]["attestationObject"] = b64(cbor2.dumps(attestation))
    body = json.dumps({"credential": credential}).encode()

    async def prepare() -> dict[str, Any]:
        token, _ = await standing.restore(warm_app, {PROVED_AT: time.time()})
        headers = {"Cookie": f"session={token}", "Content-Type": "application/json"}
        return {"method": "POST", "path": "/api/passkeys", "body": body, "headers": headers}

    cost = await measure(warm_app, prepare, clocks, 0)
    assert cost.status == 400
    cost.check(0)


# --- growth: a user who has accumulated all he may, through the app itself ------------------


@st.composite
def agent_templates(draw: st.DrawFn) -> str:
    """A crafted agent with "{}" where each session's own part goes: a run of hostile text
    after a prefix the parser's regexes look for."""
    prefix = draw(st.sampled_from(["", "Mozilla/5.0 (", "Mozilla/5.0 (Linux; Android "]))
    length = draw(st.integers(200, 600))
    run = draw(
        st.one_of(st.just("a;" * 300), st.builds(_run, chunks, st.just(length), st.just(length)))
    )
    return prefix + "{}" + run


@dataclass
class Grown:
    user: User
    agents: list[str]


async def sign_in(app: Quart, email: str, password: str, agent: str) -> int:
    client = app.test_client()
    body = {"email": email, "password": password}
    response = await client.post("/api/login", json=body, headers={"User-Agent": agent})
    return response.status_code


async def grow(app: Quart, n: int, template: str, sessions: int, failures: int) -> Grown:
    """A new user signed in `sessions` times and failed at `failures` more, each time from
    a distinct crafted agent: every row written by the app's own sign-in."""
    user = await create_user(app, f"grown{n}@example.com", "Grown " + "é" * 90, PASSWORD)
    agents = [_head(template.replace("{}", f"{n}.{i};"))[:512] for i in range(sessions + failures)]
    set_throttle(app, False)
    for agent in agents[:sessions]:
        assert await sign_in(app, user.email, PASSWORD, agent) == 200
    for agent in agents[sessions:]:
        assert await sign_in(app, user.email, "wrong password", agent) == 401
    return Grown(user, agents)


def signed_in_prepare(
    app: Quart, grown: Grown, path: str, flash_count: int
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Each run: the measuring browser signs in through the form `flash_count` + 1 times
    (each sign-in flashes a welcome, kept unread across the rotation), then asks `path`."""
    counter = iter(range(1_000_000))

    async def prepare() -> dict[str, Any]:
        client = app.test_client()
        for _ in range(flash_count + 1):
            agent = grown.agents[next(counter) % len(grown.agents)]
            form = {"email": grown.user.email, "password": PASSWORD}
            response = await client.post("/login", form=form, headers={"User-Agent": agent})
            assert response.status_code == 303
        name = app.config["SESSION_COOKIE_NAME"]
        token = next(c.value for c in client.cookie_jar or [] if c.name == name)
        headers = {"Cookie": f"{name}={token}", "User-Agent": grown.agents[0]}
        return {"method": "GET", "path": path, "body": b"", "headers": headers}

    return prepare


def sign_in_prepare(app: Quart, grown: Grown) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Each run: one more sign-in of the grown user, from one more crafted agent."""
    counter = iter(range(1_000_000))

    async def prepare() -> dict[str, Any]:
        agent = grown.agents[next(counter) % len(grown.agents)]
        body = json.dumps({"email": grown.user.email, "password": PASSWORD}).encode()
        headers = {"User-Agent": agent, "Content-Type": "application/json"}
        return {"method": "POST", "path": "/api/login", "body": body, "headers": headers}

    return prepare


USERS = iter(range(1_000_000))


@GROWTH
@given(
    template=agent_templates(),
    sessions=st.one_of(st.just(CAP), st.integers(1, CAP)),
    failures=st.integers(0, EVENTS),
    flash_count=st.integers(0, 10),
    page=st.sampled_from([1, 2, 5]),
)
async def test_a_user_at_every_limit_costs_no_more_than_the_budget(
    warm_app: Quart,
    clocks: Clocks,
    template: str,
    sessions: int,
    failures: int,
    flash_count: int,
    page: int,
) -> None:
    """The most state a user can hold (sessions, events, flashes), built by real sign-ins
    from crafted agents: the account page, the session list and a sign-in stay cheap."""
    grown = await grow(warm_app, next(USERS), template, sessions, failures)
    cases = [
        ("account", signed_in_prepare(warm_app, grown, f"/account?page={page}", flash_count), 0),
        ("sessions", signed_in_prepare(warm_app, grown, "/api/sessions?limit=100", 0), 0),
        ("sign-in", sign_in_prepare(warm_app, grown), 1),
    ]
    for label, prepare, runs in cases:
        cost = await measure(warm_app, prepare, clocks, runs)
        target(cost.own_ms, label=f"{label} CPU ms")
        cost.check(runs)
