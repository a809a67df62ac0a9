"""Property-based tests: whatever a client sends, no 5xx and a consistent database (SPEC §7).

Hypothesis drives form, JSON and query inputs into every route; schemathesis checks the
JSON API against its own /openapi.json, in-process over ASGI.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from conftest import PASSWORD
from dbrows import rows
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from quart import Quart
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from schemathesis.engine import from_schema as engine_for
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from quart_auth_app import create_app
from quart_auth_app.sessions import expiry
from quart_auth_app.store import User
from quart_auth_app.testing import create_user, login_session

FUZZ = settings(
    max_examples=int(os.environ.get("QUART_AUTH_FUZZ_EXAMPLES", "100")),  # raise it to hunt
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- input strategies ----------------------------------------------------------------------------

ODD = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",  # lone surrogates: valid in JSON escapes, not in UTF-8
    "x\udfffy",
    "\u202egnp.exe",
    "\ufeffada@example.com",
    "ADA@EXAMPLE.COM",
    "ada@example.com\x00",
    "e\u0301@example.com",
    "\U0001f600" * 20,
    "\uff21\uff44\uff41\uff20example\uff0ecom",  # fullwidth
    "İ",
    "'; DROP TABLE users; --",
    "<script>alert(1)</script>",
    "%00%ff%ed%a0%80",
    "//evil.example",
    "/\\evil.example",
    "javascript:alert(1)",
]
ANY_CHAR = st.characters(codec=None, exclude_categories=[])  # surrogates and controls included
texts = st.one_of(
    st.text(max_size=40),
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(ODD),
    st.emails(),
    st.just("ada@example.com"),
    st.just(PASSWORD),
    st.builds(
        lambda c, n: c * n, st.sampled_from("aé\U0001f600"), st.sampled_from([73, 1025, 5000])
    ),
)
huge = st.builds(lambda n: "x" * n, st.sampled_from([70_000, 200_000]))
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=8,
)
header_texts = st.text(
    st.characters(
        min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=["Cs", "Cc", "Zl", "Zp"]
    ),
    max_size=80,
)


def _form_encode(data: dict[str, str]) -> bytes:
    """url-encode with lone surrogates kept (as the invalid UTF-8 a hostile client can send)."""
    return "&".join(
        f"{quote(k.encode('utf-8', 'surrogatepass'))}={quote(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in data.items()
    ).encode("ascii")


def _fields(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """The route's own fields with hostile values, sometimes missing, plus stray extras."""
    return st.fixed_dictionaries({}, optional={name: texts for name in names}).flatmap(
        lambda known: st.dictionaries(texts, texts, max_size=2).map(
            lambda extra: {**extra, **known}
        )
    )


FORM_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=zzz",
    "text/plain",
    None,
]
JSON_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "text/json",
]


@st.composite
def form_bodies(draw: st.DrawFn, names: list[str]) -> tuple[bytes, str | None]:
    content_type = draw(st.sampled_from(FORM_TYPES))
    body = draw(
        st.one_of(
            st.fixed_dictionaries({n: texts for n in names}).map(_form_encode),
            _fields(names).map(_form_encode),
            st.binary(max_size=200),
            huge.map(lambda v: _form_encode({names[0] if names else "x": v})),
        )
    )
    return body, content_type


@st.composite
def json_bodies(draw: st.DrawFn, names: list[str]) -> tuple[bytes, str | None]:
    content_type = draw(st.sampled_from(JSON_TYPES))
    shaped = st.fixed_dictionaries({}, optional={n: json_values for n in names}).flatmap(
        lambda known: st.dictionaries(texts, json_values, max_size=2).map(
            lambda extra: {**extra, **known}
        )
    )
    well_typed = st.fixed_dictionaries({n: texts for n in names if n != "remember"})
    as_json = st.one_of(well_typed, shaped, json_values).map(
        lambda v: json.dumps(v).encode()  # lone surrogates survive as \ud800 escapes
    )
    body = draw(
        st.one_of(
            as_json,
            as_json,
            st.binary(max_size=200),
            st.sampled_from(
                [b"", b"{", b"[]", b"null", b'{"email": NaN}', b"\xff\xfe{}", b'{"a":' * 2000]
            ),
            huge.map(lambda v: json.dumps({names[0] if names else "x": v}).encode()),
        )
    )
    return body, content_type


# (method, path, fields): every route that takes input
FORM_ROUTES = [
    ("POST", "/login", ["email", "username", "password", "remember", "next"]),
    ("POST", "/register", ["email", "password", "name"]),
    ("POST", "/logout", []),
    ("POST", "/account/password", ["current_password", "new_password"]),
    ("POST", "/account/sessions/{id}/revoke", []),
    ("POST", "/account/sessions/revoke-others", []),
]
JSON_ROUTES = [
    ("POST", "/api/register", ["email", "password", "name"]),
    ("POST", "/api/login", ["email", "password", "remember"]),
    ("POST", "/api/logout", []),
    ("POST", "/api/password", ["current_password", "new_password"]),
    ("POST", "/api/sessions/revoke-others", []),
    ("DELETE", "/api/sessions/{id}", []),
]
GET_ROUTES = [
    "/",
    "/login",
    "/register",
    "/logout",
    "/protected",
    "/account",
    "/healthz",
    "/api/me",
    "/api/sessions",
    "/openapi.json",
]
ROUTE_CHANGING_PASSWORD = {"/account/password", "/api/password"}

path_ids = st.one_of(
    texts.map(lambda t: quote(t.encode("utf-8", "surrogatepass"), safe="")),
    st.just("OWN"),
    st.just("BOB"),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """One hostile request: route, body or query, headers, signed in or not."""
    family = draw(st.sampled_from(["form", "json", "get"]))
    headers = {"User-Agent": draw(header_texts)}
    if draw(st.booleans()):
        headers["Cookie"] = "session=" + draw(header_texts)
    if family == "get":
        path = draw(st.sampled_from(GET_ROUTES))
        query = draw(
            st.dictionaries(st.sampled_from(["next", "email", "password", "x"]), texts, max_size=3)
        )
        raw = "&".join(
            f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'))}" for k, v in query.items()
        )
        return {
            "method": "GET",
            "path": f"{path}?{raw}",
            "body": b"",
            "content_type": None,
            "headers": headers,
            "signed_in": draw(st.booleans()),
            "route": path,
        }
    method, route, names = draw(st.sampled_from(FORM_ROUTES if family == "form" else JSON_ROUTES))
    body, content_type = draw(form_bodies(names) if family == "form" else json_bodies(names))
    return {
        "method": method,
        "path": route.replace("{id}", draw(path_ids)),
        "body": body,
        "content_type": content_type,
        "headers": headers,
        "signed_in": draw(st.booleans()),
        "route": route,
    }


# --- the invariants ------------------------------------------------------------------------------

BCRYPT_PREFIXES = ("$2b$", "$2a$", "$2y$")
FAILED = "sign-in failed"
EVENT_KINDS = {
    "sign-in",
    "sign-in failed",
    "sign-out",
    "session revoked",
    "other sessions revoked",
    "password changed",
    "password change failed",
}


# Categories no stored name may hold: controls, surrogates, unassigned, private use, separators.
NOT_SHOWN = {"Cc", "Cs", "Cn", "Co", "Zl", "Zp"}


def check_database(app: Quart) -> None:
    """Referential integrity, normalised emails, bcrypt hashes, JSON session data."""
    users = rows(app, "SELECT id, email, name, password_hash FROM users")
    ids = {u[0] for u in users}
    emails = [u[1] for u in users]
    assert len(emails) == len(set(emails))
    for _, email, name, password_hash in users:
        assert email == unicodedata.normalize("NFC", email.strip()).lower() and "@" in email
        assert email.isprintable() and 0 < len(name) <= 100
        assert not any(unicodedata.category(ch) in NOT_SHOWN for ch in name), name
        assert not any("\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069" for ch in name)
        assert password_hash.startswith(BCRYPT_PREFIXES) and len(password_hash) == 60
    for user_id, data in rows(app, "SELECT user_id, data FROM sessions"):
        assert user_id is None or user_id in ids
        assert isinstance(json.loads(data) if isinstance(data, str) else data, dict)
    for user_id, kind in rows(app, "SELECT user_id, kind FROM events"):
        # An unknown email's failed sign-in leaves its event with no owner (equal cost).
        assert (user_id in ids and kind in EVENT_KINDS) or (user_id, kind) == (None, FAILED)
    # A counted attempt that succeeds is forgiven (count - 1), which may leave a zero.
    assert all(count >= 0 for (count,) in rows(app, "SELECT count FROM throttle"))
    if not app.config.get("DATABASE_URL"):
        with sqlite3.connect(app.config["DATABASE"]) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []


async def check_response(response: Any, request: dict[str, Any], secrets: list[str]) -> None:
    assert response.status_code < 500, (request, response.status_code)
    body = await response.get_data(as_text=True)
    for secret in secrets:
        assert secret not in body
    if request["route"].startswith("/api/") and response.status_code != 204:
        assert response.mimetype == "application/json", request
        payload = json.loads(body)
        if response.status_code >= 400:
            assert isinstance(payload["error"], str) and isinstance(payload["message"], str)
    elif not request["route"].startswith(("/api/", "/openapi", "/healthz")):
        assert response.mimetype == "text/html" or response.status_code in (302, 303)


@pytest.fixture
async def bob(app: Quart) -> User:
    return await create_user(app, "bob@example.com", "Bob", "bob's own long passphrase")


@FUZZ
@given(request=requests())
async def test_no_input_breaks_anything(
    app: Quart, user: User, bob: User, request: dict[str, Any]
) -> None:
    store = app.extensions["auth_store"]
    await store.delete_sessions_of_user(bob.id)  # Hypothesis re-runs examples on one database
    try:
        await _send_and_check(app, user, bob, request)
    finally:
        await store.delete_sessions_of_user(bob.id)


async def _send_and_check(app: Quart, user: User, bob: User, request: dict[str, Any]) -> None:
    store = app.extensions["auth_store"]
    before = await store.select_user_by_id(user.id)
    bob_token = await login_session(app, bob)
    client = app.test_client()
    headers = dict(request["headers"])
    secrets = [before.password_hash, bob_token]
    if request["signed_in"]:
        token = await login_session(app, user)
        secrets.append(token)
        headers["Cookie"] = f"session={token}"
    own = await store.select_sessions_of_user(user.id, _all(app))
    (bobs,) = await store.select_sessions_of_user(bob.id, _all(app))
    path = request["path"].replace("/OWN", f"/{own[0].id}" if own else "/none")
    path = path.replace("/BOB", f"/{bobs.id}")
    if request["content_type"]:
        headers["Content-Type"] = request["content_type"]

    response = await client.open(
        path, method=request["method"], data=request["body"], headers=headers
    )

    event(f"{request['method']} {request['route']} -> {response.status_code}")
    await check_response(response, request, secrets)
    check_database(app)
    after = await store.select_user_by_id(user.id)
    if after.password_hash != before.password_hash:  # only a successful change may do that
        assert request["route"] in ROUTE_CHANGING_PASSWORD and response.status_code in (204, 303)
    bobs_after = [s.id for s in await store.select_sessions_of_user(bob.id, _all(app))]
    assert bobs_after == [bobs.id], (request, response.status_code)  # nobody else's to touch


PATHOLOGICAL_JSON = {
    "deep objects": b'{"a":' * 5000,
    "deep arrays": b"[" * 30000,
    "deep but closed": b"[" * 3000 + b"]" * 3000,
    "lone surrogate escape": b'{"email": "\\ud800@example.com", "password": "\\udfff\\u0000xxxxxxxx"}',
    "NaN": b'{"email": NaN, "password": Infinity}',
}


@pytest.mark.parametrize("body", PATHOLOGICAL_JSON.values(), ids=PATHOLOGICAL_JSON)
@pytest.mark.parametrize("path", ["/api/register", "/api/login", "/api/password"])
async def test_pathological_json_is_a_clear_400(
    app: Quart, auth_client: Any, path: str, body: bytes
) -> None:
    response = await auth_client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    payload = await response.get_json()
    assert payload["error"] and payload["message"]
    check_database(app)


OVERSIZED = [
    ("/login", "form"),
    ("/register", "form"),
    ("/account/password", "form"),
    ("/api/register", "json"),
    ("/api/login", "json"),
    ("/api/password", "json"),
]


@pytest.mark.parametrize(("path", "kind"), OVERSIZED)
async def test_bodies_past_the_limit_are_413(
    app: Quart, auth_client: Any, user: User, path: str, kind: str
) -> None:
    big = "x" * int(app.config["MAX_CONTENT_LENGTH"])
    fields = {"email": "big@example.com", "password": big, "current_password": PASSWORD}
    fields["new_password"] = big
    if kind == "json":
        response = await auth_client.post(path, json=fields)
        assert (await response.get_json())["error"] == "too_large"
    else:
        response = await auth_client.post(path, form=fields)
    assert response.status_code == 413
    assert rows(app, "SELECT email FROM users") == [(user.email,)]
    assert rows(app, "SELECT password_hash FROM users") == [(user.password_hash,)]


INJECTIONS = [
    "' OR '1'='1",
    "ada@example.com' --",
    "x'); DROP TABLE users; --",
    '" OR ""="',
    "1; DELETE FROM sessions",
    "\\'; SELECT pg_sleep(5); --",
]


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_sql_metacharacters_are_just_text(
    app: Quart, client: Any, user: User, payload: str
) -> None:
    for email in (payload, f"{user.email}{payload}"):
        response = await client.post("/api/login", json={"email": email, "password": payload})
        assert response.status_code in (400, 401)
    name = f"Mallory {payload}"
    response = await client.post(
        "/api/register",
        json={
            "email": "mallory@example.com",
            "password": "mallory's long passphrase 3",
            "name": name,
        },
    )
    assert response.status_code == 201
    assert (await response.get_json())["name"] == name
    assert rows(app, "SELECT name FROM users WHERE email = ?", "mallory@example.com") == [(name,)]
    assert sorted(e for (e,) in rows(app, "SELECT email FROM users")) == [
        user.email,
        "mallory@example.com",
    ]
    check_database(app)


def _all(app: Quart) -> Any:
    return expiry(app.config, time.time())


# --- schemathesis: the API against its own OpenAPI document --------------------------------------


@pytest.fixture
def served_app(tmp_path: Path) -> Iterator[Quart]:
    """An app whose lifespan schemathesis runs on its own event loop (SQLite, a fresh file)."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test secret",
            "BCRYPT_ROUNDS": 4,
            "DATABASE": str(tmp_path / "schemathesis.sqlite3"),
            "MAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
            "THROTTLE_ENABLED": False,
            # Sensitive actions need the password typed in the request itself: a generated
            # DELETE /api/me without one must not delete the account the run signs in with.
            "REAUTH_WINDOW": 0,
        }
    )
    yield app
    schemathesis_asgi.shutdown_lifespans()


SCHEMATHESIS_USER = {"email": "st@example.com", "password": "schemathesis long passphrase 7"}
# Schema-valid is not always acceptable where a new password is judged (zxcvbn) or a new email
# is checked (email_validator: special-use domains, a local part of at most 64 characters):
# the server refuses those with 400, which a JSON schema cannot express; nor can it express
# that only a token from a mailed link is accepted. Everywhere else the document's constraints
# are the server's, so a schema-valid request must be accepted.
JUDGED = {
    "POST /api/register",
    "POST /api/password",
    "POST /api/email",
    "POST /api/password/forgot",
    "POST /api/password/reset",
    "POST /api/email/verify",
    # only what an authenticator made from this server's challenge is a passkey
    "POST /api/passkeys",
    "POST /api/passkeys/login",
}
NOT_PROMISED = [positive_data_acceptance]


def _fresh_cookie(app: Quart) -> str:
    """Sign the schemathesis user in through the API and return the new session cookie."""
    with schemathesis_asgi.get_client(app) as client:
        response = client.post("/api/login", json=SCHEMATHESIS_USER)
        assert response.status_code == 200
        return str(response.cookies["session"])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(served_app: Quart, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served_app)
    with schemathesis_asgi.get_client(served_app) as client:
        assert client.post("/api/register", json=SCHEMATHESIS_USER).status_code == 201
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /api/register",
        "POST /api/login",
        "GET /api/me",
        "POST /api/logout",
        "GET /api/sessions",
        "DELETE /api/sessions/{session_id}",
        "POST /api/sessions/revoke-others",
        "POST /api/password",
    }
    if mode is GenerationMode.NEGATIVE:  # only a JSON body can be schema-invalid here
        operations = [op for op in operations if len(op.body)]
        assert len(operations) >= 11
    for operation in operations:  # each at least anonymous and signed in
        assert _exercise(served_app, operation, mode) >= 2, operation.label


def _exercise(app: Quart, operation: Any, mode: GenerationMode) -> int:
    """Run up to 25 generated cases, anonymous or signed in; return how many ran."""
    calls = 0

    @settings(
        max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(case=operation.as_strategy(generation_mode=mode), signed_in=st.booleans())
    def run(case: Any, signed_in: bool) -> None:
        headers = {"Cookie": f"session={_fresh_cookie(app)}"} if signed_in else None
        excluded = NOT_PROMISED if operation.label in JUDGED else []
        case.call_and_validate(headers=headers, excluded_checks=excluded)
        nonlocal calls
        calls += 1

    run()
    return calls


def test_every_check_of_the_schemathesis_engine_passes(served_app: Quart) -> None:
    """What `schemathesis run --checks all` does against a server, in-process and signed in:
    the examples, coverage and fuzzing phases, with the checks that need them (a 405 without
    Allow, a method the document does not declare, an Allow that lists more or less)."""
    with schemathesis_asgi.get_client(served_app) as client:
        assert client.post("/api/register", json=SCHEMATHESIS_USER).status_code == 201
    config = SchemathesisConfig.from_dict(
        {
            "headers": {"Cookie": f"session={_fresh_cookie(served_app)}"},
            "checks": {"enabled": True},
            "generation": {"max-examples": 20},
            "seed": 7,
            "operations": [
                {
                    "include-operation-id": [
                        "post_api_register",
                        "post_api_password",
                        "post_api_change_email",
                        "post_api_forgot",
                        "post_api_reset",
                        "post_api_verify",
                        "post_api_add_passkey",
                        "post_api_passkey_login",
                    ],
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                }
            ],
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", served_app, config=config)
    failures: list[str] = []
    checked: set[str] = set()
    cases = 0
    for step in engine_for(schema).execute():
        assert not isinstance(step, events.FatalError), step.exception
        if isinstance(step, events.ScenarioFinished):
            cases += len(step.recorder.cases)
            for checks in step.recorder.checks.values():
                for check in checks:
                    checked.add(check.name)
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(f"{check.name} {failure.operation}: {failure.message}")
    assert not failures, "\n".join(sorted(set(failures)))
    assert cases >= 200
    assert {"unsupported_method", "negative_data_rejection", "status_code_conformance"} <= checked
