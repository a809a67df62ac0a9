"""Bounded cost (SPEC §7): a search for the inputs that cost the server the most CPU.

Hypothesis builds large adversarial requests cheaply (a short chunk from a hostile alphabet,
repeated up to the body limit; many fields, cookies, long headers) for every route that
reads input before sign-in, measures each request's CPU time (every thread of this
process) and steers towards the costliest with `target()`. No request may cost more than
BUDGET_MS besides password-strength estimation, which is bounded on its own; bcrypt at
cost 4 (~1 ms) fits in the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import itertools
import json
import os
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import cbor2
import pytest
from conftest import PASSWORD
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st
from quart import Quart
from servers import client as server_client
from servers import running
from test_passkeys import Authenticator, b64
from zxcvbn import zxcvbn

from quart_auth_app import passwords
from quart_auth_app.passkey_ceremony import user_handle
from quart_auth_app.store import NewEvent, Outgoing, Passkey, Store
from quart_auth_app.testing import create_user

BUDGET_MS = 20.0  # SPEC §7: CPU per request before the throttle admits it
STRENGTH_BUDGET_MS = 20.0  # zxcvbn's own share, after admission (SPEC §7: 50 ms in all)
BODY_LIMIT = 65536  # MAX_CONTENT_LENGTH
HEAD_LIMIT = 16384  # what Hypercorn (h11_max_incomplete_size) reads of a request head

SEARCH = settings(
    max_examples=int(os.environ.get("QUART_AUTH_COST_EXAMPLES", "150")),  # per route
    deadline=None,
    derandomize=True,  # the same search every run; target() still steers it
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Routes that read nothing but headers and a path segment: a fifth of the search each.
LIGHT = settings(SEARCH, max_examples=max(1, SEARCH.max_examples // 5))

# --- strategies: hostile text, built cheaply at any size ------------------------------------


def _interleaved_marks() -> str:
    """U+0300-U+036F with the canonical combining classes taking turns (Hypothesis draws the
    start of an alphabet most: its first marks should not all be of one class)."""
    by_class: dict[int, list[str]] = {}
    for code in range(0x300, 0x370):
        by_class.setdefault(unicodedata.combining(chr(code)), []).append(chr(code))
    columns = itertools.zip_longest(*by_class.values(), fillvalue="")
    return "".join("".join(column) for column in columns)


COMBINING = _interleaved_marks()
LOOKALIKES = "@4!1|0$5+7(%{[<38962il"
ALPHABETS = [
    COMBINING,
    COMBINING + "aeé@.",
    LOOKALIKES,
    LOOKALIKES + "aeilostpwrd",
    "漢字仮名交じり文ハングル한국어",
    "\U0001f600\U0001f469\u200d\U0001f4bb\U0001f1fa\U0001f1f8\ufe0f",
    "".join(chr(c) for c in range(0x20)) + "\x7f\x85\u2028",
    "&=%;,\"'\\/?#+ ",
    "a@.",
    "0123456789",
]
chunks = st.sampled_from([*ALPHABETS, None]).flatmap(
    # None: any code point but lone surrogates
    lambda a: st.text(a, min_size=1, max_size=8) if a else st.text(min_size=1, max_size=6)
)
# Log-uniform: runs of every size, from one chunk to the body limit, are drawn as often.
repeats = st.builds(
    lambda power, extra: (1 << power) + extra, st.integers(0, 15), st.integers(0, 99)
)


def _run(chunk: str, times: int, limit: int) -> str:
    return (chunk * min(times, limit // len(chunk) + 1))[:limit]


def big_text(limit: int = BODY_LIMIT // 3) -> st.SearchStrategy[str]:
    """A chunk repeated up to `limit` characters, sometimes in two different halves.

    A third of the body limit by default: most such runs still fit in a body once encoded,
    so the search can climb towards costlier ones instead of falling off into 413s.
    """
    run = st.builds(_run, chunks, repeats, st.just(limit))
    return st.one_of(run, st.builds(lambda a, b: (a + b)[:limit], run, run))


def _head(value: str) -> str:
    """A header value as a client can send it: Latin-1 encodable, without line breaks."""
    encoded = value.encode("utf-8", "surrogatepass").decode("latin-1")
    return encoded.replace("\r", " ").replace("\n", " ")[: HEAD_LIMIT // 2]


@st.composite
def heads(draw: st.DrawFn) -> dict[str, str]:
    """User-Agent, cookies and a stray header, each possibly huge or numerous."""
    headers = {"User-Agent": _head(draw(big_text(HEAD_LIMIT)))}
    kind = draw(st.sampled_from(["none", "many", "long session", "odd"]))
    if kind == "many":
        count = draw(st.integers(0, HEAD_LIMIT // 6))
        headers["Cookie"] = "; ".join(f"c{i}=v" for i in range(count))
    elif kind == "long session":
        headers["Cookie"] = "session=" + _head(draw(big_text(HEAD_LIMIT)))
    elif kind == "odd":
        headers["Cookie"] = _head(draw(big_text(HEAD_LIMIT)))
    if draw(st.booleans()):
        headers["Accept-Language"] = _head(draw(big_text(HEAD_LIMIT)))
    return headers


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["none", "next", "many"]))
    if kind == "next":
        return "?next=" + quote(draw(big_text(HEAD_LIMIT // 6)), safe="/")
    if kind == "many":
        return "?" + "&".join(["next=/a"] * draw(st.integers(0, HEAD_LIMIT // 8)))
    return ""


# --- passkeys: credentials shaped like PublicKeyCredential.toJSON(), hostile inside ----------

ORIGIN, RP_ID = "http://localhost:5000", "localhost"  # PUBLIC_URL's default
UP, UV, AT, ED = 0x01, 0x04, 0x40, 0x80  # authenticatorData's flags
CBOR_LIMIT = 40_000  # raw bytes: their base64url (4/3) still fits in a body
P61 = (1 << 61) - 1  # Python hashes an int modulo this: its multiples all collide


def _cbor_head(major: int, argument: int) -> bytes:
    """A CBOR item's initial byte(s): major type and its argument (a length, a tag)."""
    if argument < 24:
        return bytes([major << 5 | argument])
    size = next(s for s in (1, 2, 4, 8) if argument < 1 << (8 * s))
    return bytes([major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[size]]) + argument.to_bytes(size, "big")


def _shared(depth: int) -> bytes:
    """Value sharing (tags 28/29) as a "billion laughs": each level is a list holding the
    previous one twice; decoding is linear, re-encoding it without sharing doubles per level."""
    items = [b"\xd8\x1c\x00"] + [
        b"\xd8\x1c\x82" + 2 * (b"\xd8\x1d" + cbor2.dumps(i)) for i in range(depth - 1)
    ]
    return _cbor_head(4, depth) + b"".join(items)


def _colliding(count: int, step: int) -> bytes:
    """A map whose integer keys all hash alike (multiples of 2**61 - 1, or of `step`)."""
    keys = b"".join(cbor2.dumps(i * step) + b"\x00" for i in range(count))
    return _cbor_head(5, count) + keys


def _tagged(tag: int, content: bytes) -> bytes:
    return _cbor_head(6, tag) + content


_numbers = st.integers(1, CBOR_LIMIT // 2)
hostile_cbor = st.one_of(
    st.builds(_shared, st.integers(1, 64)),
    st.builds(lambda n, b: b * n + b"\x00", _numbers, st.sampled_from([b"\x81", b"\xa1\x00"])),
    st.builds(_colliding, st.integers(0, CBOR_LIMIT // 11), st.sampled_from([P61, 1, -P61])),
    st.builds(  # bignums and what is built on them: decimal fractions, bigfloats, rationals
        lambda tag, size, exponent: _tagged(
            tag, b"\x82" + cbor2.dumps(exponent) + cbor2.dumps(1 << (8 * size))
        ),
        st.sampled_from([4, 5, 30]),
        st.integers(0, CBOR_LIMIT // 2),
        st.sampled_from([1, -1, 10**6, -(10**6), 10**18, -(10**18)]),
    ),
    st.builds(lambda n: _tagged(2, cbor2.dumps(b"\xff" * n)), _numbers),
    st.builds(  # text for semantic tags: a regular expression, MIME, a date, a URI
        lambda tag, text: _tagged(tag, cbor2.dumps(text)),
        st.sampled_from([35, 36, 0, 32, 33, 37]),
        big_text(CBOR_LIMIT // 3),
    ),
    st.builds(lambda n: b"\x5f" + b"\x41a" * n + b"\xff", _numbers),  # indefinite length
    st.builds(lambda n: b"\x9f" * n + b"\xff" * n, st.integers(1, CBOR_LIMIT // 2)),
    st.binary(max_size=64),
)


def _json_hostile(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


hostile_json = st.one_of(
    st.builds(lambda n: "[" * n + "]" * n, st.integers(1, CBOR_LIMIT // 2)),
    st.builds(lambda n: "9" * n, st.integers(1, CBOR_LIMIT)),
    st.builds(lambda n: '{"a":' * n + "0" + "}" * n, st.integers(1, CBOR_LIMIT // 6)),
    st.builds(lambda n: "{" + ",".join(f'"k{i}":0' for i in range(n)) + "}", st.integers(0, 4000)),
    big_text(CBOR_LIMIT // 7).map(_json_hostile),  # escapes: up to six characters each
)


@dataclass
class Ceremony:
    """What a passkey answer needs: the server's options and an authenticator."""

    options: dict[str, Any]
    authenticator: Authenticator

    @property
    def kind(self) -> str:
        return "webauthn.get" if "rpId" in self.options else "webauthn.create"

    def answer(self) -> dict[str, Any]:
        if self.kind == "webauthn.get":
            return self.authenticator.get(self.options, origin=ORIGIN)
        return self.authenticator.create(self.options, origin=ORIGIN)


@st.composite
def client_data(draw: st.DrawFn, ceremony: Ceremony) -> bytes:
    """Client data naming the real challenge, with a hostile member; or hostile JSON."""
    if draw(st.integers(0, 3)) == 0:
        return draw(hostile_json).encode()
    members = {
        "type": ceremony.kind,
        "challenge": ceremony.options["challenge"],
        "origin": ORIGIN,
        "crossOrigin": False,
    }
    hostile = draw(st.sampled_from(["type", "challenge", "origin", "tokenBinding", "x"]))
    document = json.dumps({**members, hostile: None})
    return document.replace("null", draw(hostile_json), 1).encode()


def _auth_data(flags: int, tail: bytes) -> bytes:
    return hashlib.sha256(RP_ID.encode()).digest() + bytes([flags]) + bytes(4) + tail


@st.composite
def authenticator_data(draw: st.DrawFn, authenticator: Authenticator) -> bytes:
    """authenticatorData with hostile CBOR where extensions or a credential key go."""
    cbor: bytes = draw(hostile_cbor)
    where = draw(st.sampled_from(["extensions", "key", "key and extensions", "raw"]))
    attested = bytes(16) + len(authenticator.credential_id).to_bytes(2, "big")
    attested += authenticator.credential_id
    if where == "extensions":
        return _auth_data(UP | UV | ED, cbor)
    if where == "key":
        return _auth_data(UP | UV | AT, attested + cbor)
    if where == "key and extensions":
        return _auth_data(UP | UV | AT | ED, attested + authenticator.cose_key() + cbor)
    return cbor


@st.composite
def attestation_objects(draw: st.DrawFn, authenticator: Authenticator) -> bytes:
    """attestationObject: format "none" around hostile authData, or hostile CBOR in it."""
    where = draw(st.sampled_from(["authData", "attStmt", "fmt", "raw"]))
    raw: bytes = draw(hostile_cbor)
    if where == "raw":
        return raw
    members = {
        "fmt": cbor2.dumps("none"),
        "attStmt": cbor2.dumps({}),
        "authData": cbor2.dumps(draw(authenticator_data(authenticator))),
    }
    if where != "authData":
        members[where] = raw
    return _cbor_head(5, 3) + b"".join(cbor2.dumps(k) + v for k, v in members.items())


@st.composite
def credentials(draw: st.DrawFn, ceremony: Ceremony | None) -> Any:
    """A credential as toJSON() gives it, valid or with one hostile member; or anything."""
    shape = draw(st.sampled_from(["valid", "hostile member", "hostile member", "anything"]))
    if ceremony is None or shape == "anything":
        return draw(
            st.one_of(
                big_text(BODY_LIMIT // 3),
                st.integers(),
                st.none(),
                st.lists(st.integers(), max_size=3),
                st.dictionaries(st.sampled_from(["id", "rawId", "type", "response"]), st.text()),
            )
        )
    credential = ceremony.answer()
    if shape == "valid":
        return credential
    response = dict(credential["response"])
    credential["response"] = response
    # the CBOR-bearing members most: they reach the most code
    cbor = [m for m in ("authenticatorData", "attestationObject") if m in response]
    member = draw(st.sampled_from([*response, *cbor, *cbor, "id", "type"]))
    authenticator = ceremony.authenticator
    if member == "clientDataJSON":
        response[member] = b64(draw(client_data(ceremony)))
    elif member == "authenticatorData":
        response[member] = b64(draw(authenticator_data(authenticator)))
    elif member == "attestationObject":
        response[member] = b64(draw(attestation_objects(authenticator)))
    elif member in ("signature", "userHandle"):
        response[member] = b64(draw(st.one_of(hostile_cbor, st.binary(max_size=200))))
    elif member == "id":
        other = st.binary(min_size=1, max_size=1023).map(b64)
        credential["id"] = credential["rawId"] = draw(st.one_of(other, big_text(CBOR_LIMIT)))
    else:
        response[member] = draw(big_text(CBOR_LIMIT))
    return credential


async def login_ceremony(app: Quart, authenticator: Authenticator) -> Ceremony:
    """Fresh sign-in options, as the login page asks for them."""
    response = await app.test_client().post("/api/passkeys/login/options")
    assert response.status_code == 200
    return Ceremony(await response.get_json(), authenticator)


def store_of(app: Quart) -> Store:
    store: Store = app.extensions["auth_store"]
    return store


async def add_passkey(app: Quart, user_id: int, authenticator: Authenticator) -> None:
    """Store `authenticator`'s credential as the user's passkey, as a registration would."""
    passkey = Passkey(
        id=authenticator.id,
        user_id=user_id,
        name="Laptop",
        public_key=authenticator.cose_key(),
        sign_count=authenticator.counter,
        transports=["internal"],
        created_at=time.time(),
    )
    event = NewEvent("passkey added", "203.0.113.7", "", "")
    notice = Outgoing("passkey_added", "owner@example.com", {"passkey_name": passkey.name})
    assert await store_of(app).insert_passkey(passkey, None, event, notice, time.time())


@pytest.fixture
async def passkey_owner(warm_app: Quart) -> Authenticator:
    """A user with a passkey: sign-in answers reach the signature check (and the CBOR)."""
    user = await create_user(warm_app, "pia@example.com", "Pia", PASSWORD)
    authenticator = Authenticator(user_handle=b64(user_handle(user)))
    await add_passkey(warm_app, user.id, authenticator)
    return authenticator


FIELDS = {
    "/login": ["email", "password", "next", "remember"],
    "/register": ["email", "password", "name"],
    "/logout": [],
    "/api/login": ["email", "password", "remember"],
    "/api/register": ["email", "password", "name"],
    "/api/logout": [],
    "/password/forgot": ["email"],
    "/api/password/forgot": ["email"],
    "/password/reset": ["new_password"],
    "/api/password/reset": ["token", "new_password"],
    "/email/verify": ["token"],
    "/api/email/verify": ["token"],
    "/email/change": ["token"],
    "/login/verify": ["code", "next"],
    "/api/login/second-factor": ["code"],
    "/api/passkeys/login/options": [],
    "/api/passkeys/login": ["credential", "remember"],
}


def _multipart(fields: list[tuple[str, str]]) -> bytes:
    parts = [
        f'--B\r\nContent-Disposition: form-data; name="{quote(k)}"\r\n\r\n{v}\r\n'
        for k, v in fields
    ]
    return ("".join(parts) + "--B--\r\n").encode("utf-8", "surrogatepass")


def values(
    field: str, plausible: bool, limit: int, ceremony: Ceremony | None = None
) -> st.SearchStrategy[Any]:
    """Any text for the field or, when `plausible`, often text that passes its validation
    (a plausible password is still hostile: any text of an accepted length); a passkey
    answer for `credential`."""
    if field == "credential":
        return credentials(ceremony if plausible else None)
    strategies: dict[str, st.SearchStrategy[str]] = {
        "email": st.builds(lambda n: f"user{n}@example.com", st.integers(0)),
        "password": st.builds(_run, chunks, st.integers(8, 1024), st.just(1024)),
        "name": st.text("abc xyz", max_size=100),
        "token": st.text("ABCabc0123-_", min_size=43, max_size=43),
    }
    strategies["new_password"] = strategies["password"]
    if plausible and field in strategies:
        return st.one_of(strategies[field], big_text(limit))
    return st.sampled_from(["", "on"]) if plausible else big_text(limit)


@st.composite
def bodies(draw: st.DrawFn, route: str, ceremony: Ceremony | None = None) -> tuple[bytes, str]:
    """The route's fields, one of them possibly huge (several would only make a 413), the
    others up to a few hundred characters, plus possibly thousands of stray fields."""
    names = FIELDS[route]
    focus = draw(st.sampled_from(names)) if names else ""
    plausible = draw(st.booleans())  # every field present, most of them valid: the deep path
    fields = [
        (name, draw(values(name, plausible, BODY_LIMIT // 3 if name == focus else 256, ceremony)))
        for name in names
        if plausible or draw(st.booleans())
    ]
    fields += [("x", "")] * draw(st.one_of(st.just(0), st.integers(0, BODY_LIMIT // 3)))
    if route.startswith("/api/"):
        number = draw(st.sampled_from(["", "", "", "9" * 5000, "1e999999", "-0." + "1" * 30000]))
        document: dict[str, Any] = dict(fields)
        if "remember" in document:
            document["remember"] = bool(document["remember"])
        payload = json.dumps(document, ensure_ascii=not draw(st.integers(0, 3)))
        if number:
            payload = payload[:-1] + (", " if fields else "") + f'"n": {number}}}'
        return payload.encode("utf-8", "surrogatepass"), "application/json"
    if draw(st.booleans()):
        return _multipart(fields), "multipart/form-data; boundary=B"
    body = urlencode(fields, encoding="utf-8", errors="surrogatepass")
    return body.encode("ascii"), "application/x-www-form-urlencoded"


# Routes whose input is the head, at most a path segment ("{...}") and no fields: a
# lighter search.
LIGHT_ROUTES = [("POST", "/api/passkeys/login/options")] + [
    ("GET", route)
    for route in [
        "/password/reset/{token}",
        "/email/verify/{token}",
        "/email/change/{token}",
        "/login/verify",
        "/email/unverified",
        "/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
        "/static/{filename}",
    ]
]
ROUTES = [("POST", route) for route in sorted(FIELDS) if ("POST", route) not in LIGHT_ROUTES] + [
    ("GET", route)
    for route in ["/", "/login", "/register", "/protected", "/password/forgot", "/password/reset"]
]


@st.composite
def segments(draw: st.DrawFn, route: str) -> str:
    """The route with its "{...}" segment filled in: plausible, or hostile text (quoted)."""
    if "{" not in route:
        return route
    plausible = {
        "{token}": st.text("ABCabc0123-_", min_size=43, max_size=43),
        "{filename}": st.sampled_from(["passkeys.js", "style.css", "app.js", "../config.py"]),
    }
    name = route[route.index("{") : route.index("}") + 1]
    hostile = big_text(HEAD_LIMIT // 4).map(lambda s: quote(_head(s), safe=""))
    return route.replace(name, draw(st.one_of(plausible[name], hostile)))


@st.composite
def requests(
    draw: st.DrawFn, method: str, route: str, ceremony: Ceremony | None = None
) -> dict[str, Any]:
    """Any request a visitor without a session can send to the route, as bytes ready to go."""
    body, content_type = draw(bodies(route, ceremony)) if method == "POST" else (b"", "")
    headers = draw(heads())
    if content_type:
        headers["Content-Type"] = content_type
    return {
        "method": method,
        "path": draw(segments(route)) + draw(query_strings()),
        "body": body,
        "headers": headers,
        "throttled": draw(st.booleans()),
    }


# --- measuring ------------------------------------------------------------------------------


class StrengthClock:
    """CPU time spent inside zxcvbn, in whichever thread it ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ms = 0.0

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return zxcvbn(*args, **kwargs)
            finally:
                self.ms += (time.thread_time() - start) * 1000

        monkeypatch.setattr("quart_auth_app.passwords.zxcvbn", timed)


async def cpu_ms(app: Quart, request: dict[str, Any]) -> tuple[int, float]:
    """Status and CPU milliseconds (this process, every thread) of one request."""
    client = app.test_client()
    gc.collect()
    gc.disable()  # a collection of the test's own garbage is not the request's cost
    try:
        start = time.process_time()
        response = await client.open(
            request["path"],
            method=request["method"],
            data=request["body"],
            headers=request["headers"],
        )
        await response.get_data()
        spent = (time.process_time() - start) * 1000
    finally:
        gc.enable()
    return response.status_code, spent


def set_throttle(app: Quart, throttled: bool) -> None:
    """Everyone refused (429), or nobody: the search covers both paths."""
    limit = 0 if throttled else 1_000_000
    for key in ("THROTTLE_ACCOUNT_FAILURES", "THROTTLE_ADDRESS_FAILURES"):
        app.config[key] = limit
    app.config["THROTTLE_SIGNUPS_PER_ADDRESS"] = limit
    app.config["THROTTLE_DEVICE_FAILURES"] = limit


WARM_UP: list[dict[str, Any]] = [
    {"method": m, "path": p, "body": b, "headers": h, "throttled": t}
    for t in (False, True)
    for m, p, b, h in [
        ("GET", "/", b"", {}),
        ("GET", "/login?next=/protected", b"", {}),
        ("GET", "/register", b"", {}),
        ("GET", "/protected", b"", {}),
        ("GET", "/logout", b"", {}),
        ("GET", "/nowhere", b"", {}),
        ("POST", "/login", b"email=a%40b.co&password=xxxxxxxx", {}),
        ("POST", "/login", b"x" * (BODY_LIMIT + 1), {}),
        ("POST", "/register", b"email=a&password=x", {}),
        ("POST", "/register", b"email=w%40b.co&password=password", {}),
        ("POST", "/register", b"email=t%40b.co&password=plum+kettle+orbit+9", {}),  # created
        ("POST", "/register", b"email=t%40b.co&password=slate+violin+cedar+4", {}),  # 409
        ("POST", "/logout", b"", {}),
        ("POST", "/api/login", b'{"email": "a@b.co", "password": "xxxxxxxx"}', {}),
        ("POST", "/api/login", b"{", {}),
        ("POST", "/api/login", b"a=b", {"Content-Type": "text/plain"}),
        ("POST", "/api/register", b'{"email": "a", "password": "x"}', {}),
        ("POST", "/api/register", b'{"email": "w@b.co", "password": "password"}', {}),
        ("POST", "/api/logout", b"", {}),
    ]
]


async def measure(
    app: Quart, request: dict[str, Any], clock: StrengthClock
) -> tuple[int, float, float]:
    """Status, CPU ms besides zxcvbn, and zxcvbn's ms: the least of up to ten runs, each
    after a longer rest, so a passing hiccup of this machine (or work an earlier request
    left running) is not taken for an expensive input. An input that is expensive is so
    every time (CI once saw a 409 over budget in five runs and under it when Hypothesis ran it
    again)."""
    set_throttle(app, request["throttled"])
    if request["method"] == "POST" and "Content-Type" not in request["headers"]:
        kind = "application/json" if request["path"].startswith("/api/") else None
        request["headers"]["Content-Type"] = kind or "application/x-www-form-urlencoded"
    best: tuple[int, float, float] | None = None
    for attempt in range(10):
        # Let work queued behind earlier responses (touches, a pool thread) finish first.
        await asyncio.sleep(0.001 * (1 << min(attempt, 7)))
        clock.ms = 0.0
        status, spent = await cpu_ms(app, request)
        run = (status, spent - clock.ms, clock.ms)
        best = run if best is None else min(best, run, key=lambda r: r[1] + r[2])
        if best[1] <= BUDGET_MS and best[2] <= STRENGTH_BUDGET_MS:
            break
    assert best is not None
    return best


@pytest.fixture
def db_config(tmp_path: Path) -> dict[str, Any]:
    """SQLite only: the costs searched for are the engine's neighbours, not its own."""
    return {"DATABASE": str(tmp_path / "app.sqlite3")}


@contextlib.asynccontextmanager
async def warmed(app: Quart) -> AsyncIterator[Quart]:
    """The app after every route, template and error page has run once (first-call costs)."""
    client = app.test_client()
    for request in WARM_UP * 2:
        set_throttle(app, request["throttled"])
        await client.open(
            request["path"], method=request["method"], data=request["body"], headers={}
        )
    gc.collect()
    gc.freeze()  # what exists now is not collected again: each request's gc.collect() is quick
    try:
        yield app
    finally:
        gc.unfreeze()


@pytest.fixture
async def warm_app(app: Quart) -> AsyncIterator[Quart]:
    async with warmed(app):
        yield app


def check(request: dict[str, Any], status: int, own_ms: float, strength_ms: float) -> None:
    summary = f"{request['method']} {request['path'][:60]} -> {status}"
    assert status < 500, summary
    assert own_ms <= BUDGET_MS, f"{summary}: {own_ms:.1f} ms of CPU"
    assert strength_ms <= STRENGTH_BUDGET_MS, f"{summary}: zxcvbn took {strength_ms:.1f} ms"


# --- the search -----------------------------------------------------------------------------


async def search_once(
    app: Quart,
    clock: StrengthClock,
    method: str,
    route: str,
    data: st.DataObject,
    ceremony: Ceremony | None = None,
) -> None:
    """One request of the search: drawn, measured, steered towards the costliest."""
    request = data.draw(requests(method, route, ceremony))
    status, own_ms, strength_ms = await measure(app, request, clock)
    event(f"{status}")
    target(own_ms, label="CPU ms besides zxcvbn")
    target(strength_ms, label="zxcvbn CPU ms")
    check(request, status, own_ms, strength_ms)


@pytest.mark.parametrize("method, route", ROUTES, ids=[f"{m} {r}" for m, r in ROUTES])
@SEARCH
@given(data=st.data())
async def test_no_request_costs_more_than_the_budget(
    warm_app: Quart,
    passkey_owner: Authenticator,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    route: str,
    data: st.DataObject,
) -> None:
    """A search per route, steered by target() towards the costliest requests."""
    ceremony = None
    if "credential" in FIELDS.get(route, []):  # answers to fresh options, from a real passkey
        ceremony = await login_ceremony(warm_app, passkey_owner)
    await search_once(warm_app, StrengthClock(monkeypatch), method, route, data, ceremony)


@pytest.mark.parametrize("method, route", LIGHT_ROUTES, ids=[f"{m} {r}" for m, r in LIGHT_ROUTES])
@LIGHT
@given(data=st.data())
async def test_no_light_request_costs_more_than_the_budget(
    warm_app: Quart, monkeypatch: pytest.MonkeyPatch, method: str, route: str, data: st.DataObject
) -> None:
    """The same search, shorter, for routes that read only the head and the path."""
    await search_once(warm_app, StrengthClock(monkeypatch), method, route, data)


# --- the inputs an earlier review found, kept as regressions --------------------------------

MARKS = "\u0301\u0316" * 15_000  # 60 KB of UTF-8: combining marks, as costly for NFC as any
LOOKALIKE_PASSWORD = ("@4!1|0$5+7aeilost" * 4)[:64]
REGRESSIONS = {
    "api login email": ("/api/login", {"email": "a" + MARKS, "password": "x" * 8}),
    "form login email": ("/login", {"email": "a" + MARKS[:6000], "password": "x" * 8}),
    "form login username": ("/login", {"username": "a" + MARKS[:6000], "password": "x" * 8}),
    "api sign-up name": (
        "/api/register",
        {"email": "n@example.com", "name": MARKS, "password": "a long enough passphrase 42"},
    ),
    "form sign-up name": (
        "/register",
        {"email": "n@example.com", "name": MARKS[:6000], "password": "a passphrase 42 long"},
    ),
    "api sign-up look-alike password": (
        "/api/register",
        {"email": "l@example.com", "password": LOOKALIKE_PASSWORD},
    ),
    "form sign-up look-alike password": (
        "/register",
        {"email": "m@example.com", "password": "1|7!@4$5+0(3{[<8962%" * 3},
    ),
}


@pytest.mark.parametrize("route, fields", REGRESSIONS.values(), ids=REGRESSIONS)
@pytest.mark.parametrize("throttled", [False, True], ids=["admitted", "throttled"])
async def test_known_expensive_inputs_are_cheap(
    warm_app: Quart,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
    fields: dict[str, str],
    throttled: bool,
) -> None:
    if route.startswith("/api/"):
        body = json.dumps(fields, ensure_ascii=False).encode()
    else:
        body = urlencode(fields).encode()
    assert len(body) <= BODY_LIMIT  # past it, a 413 would prove nothing
    request = {"method": "POST", "path": route, "body": body, "headers": {}}
    status, own_ms, strength_ms = await measure(
        warm_app, {**request, "throttled": throttled}, StrengthClock(monkeypatch)
    )
    # 200: a second run of a sign-up signs in (retry-safe sign-up, when the first was slow)
    assert 400 <= status < 500 or status in (200, 201, 303)
    check(request, status, own_ms, strength_ms)


# authenticatorData of a sign-in with a registered passkey, the CBOR where extensions go
PASSKEY_REGRESSIONS = {
    # tags 28/29: 22 levels of a list holding the previous one twice re-encode to 4 Mi items
    "shared values": _auth_data(UP | UV | ED, _shared(22)),
    "colliding map keys": _auth_data(UP | UV | ED, _colliding(1400, P61)),
    "bigfloat": _auth_data(UP | UV | ED, _tagged(5, b"\x82\x01" + cbor2.dumps(1 << 120_000))),
    "credential key shared": _auth_data(UP | UV | AT, bytes(18) + _shared(22)),
}


@pytest.mark.parametrize("auth_data", PASSKEY_REGRESSIONS.values(), ids=PASSKEY_REGRESSIONS)
async def test_known_expensive_passkey_answers_are_cheap(
    warm_app: Quart, passkey_owner: Authenticator, monkeypatch: pytest.MonkeyPatch, auth_data: bytes
) -> None:
    credential = (await login_ceremony(warm_app, passkey_owner)).answer()
    credential["response"]["authenticatorData"] = b64(auth_data)
    body = json.dumps({"credential": credential}).encode()
    assert len(body) <= BODY_LIMIT
    request = {"method": "POST", "path": "/api/passkeys/login", "body": body, "headers": {}}
    status, own_ms, strength_ms = await measure(
        warm_app, {**request, "throttled": False}, StrengthClock(monkeypatch)
    )
    assert status == 400
    check(request, status, own_ms, strength_ms)


@pytest.mark.parametrize("name", ["a" * 300, "é" * 200])
async def test_overlong_static_names_are_a_404(warm_app: Quart, name: str) -> None:
    """Found by the search: ENAMETOOLONG from the file system was a 500."""
    response = await warm_app.test_client().get(f"/static/{name}")
    assert response.status_code == 404


async def test_twenty_thousand_empty_fields_are_refused_cheaply(
    warm_app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = {
        "method": "POST",
        "path": "/login",
        "body": b"&" * 21_000,
        "headers": {},
        "throttled": False,
    }
    status, own_ms, strength_ms = await measure(warm_app, request, StrengthClock(monkeypatch))
    assert status == 413
    check(request, status, own_ms, strength_ms)


@pytest.mark.parametrize(
    "body", [b'{"email": ' + b"9" * 60_000 + b', "password": "x"}', b'{"email": 1e999999}']
)
async def test_huge_json_numbers_are_a_400(warm_app: Quart, body: bytes) -> None:
    client = warm_app.test_client()
    response = await client.post(
        "/api/login", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert (await response.get_json())["error"] in ("bad_request", "invalid_json", "invalid_input")


def test_strength_input_is_bounded() -> None:
    """zxcvbn sees a bounded prefix: shorter the more distinct look-alikes it holds."""
    assert passwords.strength_input("x" * 1000) == "x" * passwords.STRENGTH_PREFIX
    every_lookalike = "".join(sorted(passwords.LOOKALIKES))
    cut = passwords.strength_input(every_lookalike * 10)
    assert len(cut) < len(passwords.PREFIX_BY_LOOKALIKES)
    assert passwords.weakness("password" * 20, []) is not None
    assert passwords.weakness("correct horse battery staple", []) is None


# --- the real server: expensive inputs do not stall the event loop -------------------------


LOOP_BUDGET_MS = BUDGET_MS  # CPU of the event-loop thread per expensive request


def loop_cpu_ms(pid: int) -> float:
    """CPU time (user + system) of a worker's main thread, its event loop, in ms."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


@pytest.mark.integration
async def test_expensive_requests_leave_the_event_loop_free(tmp_path: Path) -> None:
    """The costly steps (bcrypt, zxcvbn) run in threads: what the event loop spends on each
    expensive request stays small, so other requests are served meanwhile. Measured as
    CPU time of the worker's loop thread (not wall time, which a loaded machine stretches)."""
    env = {
        "QUART_DATABASE": str(tmp_path / "app.sqlite3"),
        "QUART_SECRET_KEY": "test secret",
        "QUART_THROTTLE_ENABLED": "false",
        "QUART_BCRYPT_ROUNDS": "10",  # ~50 ms a run: on the loop it would show at once
    }
    expensive = [
        ("/api/login", {"email": "a" + MARKS, "password": "x" * 8}),
        ("/api/register", {"email": "z@example.com", "password": LOOKALIKE_PASSWORD}),
    ]
    rounds = 20
    with running(tmp_path, env, workers=1) as server:
        (worker,) = server.worker_pids()
        async with server_client(server) as attacker, server_client(server) as visitor:

            async def flood(route: str, fields: dict[str, str]) -> None:
                body = json.dumps(fields, ensure_ascii=False).encode()
                for _ in range(rounds):
                    response = await attacker.post(
                        route, content=body, headers={"Content-Type": "application/json"}
                    )
                    assert response.status_code < 500

            await visitor.get("/healthz")  # warm
            spent: dict[str, float] = {}
            for route, fields in expensive:
                before = loop_cpu_ms(worker)
                await flood(route, fields)
                spent[route] = (loop_cpu_ms(worker) - before) / rounds
                assert (await visitor.get("/healthz")).status_code == 200
    print("event loop CPU per expensive request:", {r: f"{ms:.1f} ms" for r, ms in spent.items()})
    assert max(spent.values()) < LOOP_BUDGET_MS, spent
