"""Cross-origin protection, security headers and open redirects (SPEC §7, issue 3)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import servers
from conftest import PASSWORD
from quart import Quart
from quart.testing import QuartClient

from quart_auth_app import create_app
from quart_auth_app.security import is_cross_origin
from quart_auth_app.sessions import hash_token
from quart_auth_app.store import Store, User
from quart_auth_app.testing import authenticated_client


def store(app: Quart) -> Store:
    return app.extensions["auth_store"]  # type: ignore[no-any-return]


def session_token(client: QuartClient) -> str | None:
    for cookie in client.cookie_jar or []:
        if cookie.name == "session":
            return cookie.value
    return None


# --- the cross-origin decision (Go 1.25 net/http CrossOriginProtection) ------------------------

# (name, method, Sec-Fetch-Site, Origin, refused): the cases of Go's TestCrossOriginProtectionSecFetchSite
# (request to https://example.com/), then the "origin matches host" server case and a few edges.
GO_CASES = [
    ("same-origin allowed", "POST", "same-origin", None, False),
    ("none allowed", "POST", "none", None, False),
    ("cross-site blocked", "POST", "cross-site", None, True),
    ("same-site blocked", "POST", "same-site", None, True),
    ("no header with no origin", "POST", None, None, False),
    ("no header with matching origin", "POST", None, "https://example.com", False),
    ("no header with mismatched origin", "POST", None, "https://attacker.example", True),
    ("no header with null origin", "POST", None, "null", True),
    ("GET allowed", "GET", "cross-site", None, False),
    ("HEAD allowed", "HEAD", "cross-site", None, False),
    ("OPTIONS allowed", "OPTIONS", "cross-site", None, False),
    ("PUT blocked", "PUT", "cross-site", None, True),
    # beyond Go's table
    ("PATCH blocked", "PATCH", "cross-site", None, True),
    ("DELETE blocked", "DELETE", "cross-site", None, True),
    (
        "cross-site with matching origin still blocked",
        "POST",
        "cross-site",
        "https://example.com",
        True,
    ),
    (
        "same-origin header wins over a foreign origin",
        "POST",
        "same-origin",
        "https://attacker.example",
        False,
    ),
    ("unknown Sec-Fetch-Site value blocked", "POST", "bogus", None, True),
    ("origin with another port", "POST", None, "https://example.com:8443", True),
    ("origin of a subdomain", "POST", None, "https://evil.example.com", True),
    (
        "http origin for the same host passes (Go fails open on scheme)",
        "POST",
        None,
        "http://example.com",
        False,
    ),
    ("empty origin is no origin", "POST", None, "", False),
    ("unparsable origin", "POST", None, "http://[::1", True),
]


@pytest.mark.parametrize(
    ("method", "site", "origin", "refused"),
    [case[1:] for case in GO_CASES],
    ids=[case[0] for case in GO_CASES],
)
def test_cross_origin_decision_matches_go(
    method: str, site: str | None, origin: str | None, refused: bool
) -> None:
    assert is_cross_origin(method, site, origin, "example.com") is refused


# Through the app: a form endpoint and a JSON endpoint, each with Go's cases.
ENDPOINTS = {
    "form": ("/logout", {"form": {}}, 303),
    "json": ("/api/logout", {"json": {}}, 204),
}


def _headers(site: str | None, origin: str | None) -> dict[str, str]:
    headers = {"Host": "example.com"}
    if site is not None:
        headers["Sec-Fetch-Site"] = site
    if origin is not None:
        headers["Origin"] = origin
    return headers


@pytest.mark.parametrize("kind", ENDPOINTS)
@pytest.mark.parametrize(
    ("method", "site", "origin", "refused"),
    [case[1:] for case in GO_CASES if case[1] in ("POST", "PUT")],
    ids=[case[0] for case in GO_CASES if case[1] in ("POST", "PUT")],
)
async def test_cross_origin_writes_are_refused_and_the_session_untouched(
    app: Quart,
    user: User,
    kind: str,
    method: str,
    site: str | None,
    origin: str | None,
    refused: bool,
) -> None:
    client = await authenticated_client(app, user)
    token = session_token(client)
    assert token is not None
    path, body, ok_status = ENDPOINTS[kind]
    response = await client.open(path, method=method, headers=_headers(site, origin), **body)

    row = await store(app).select_session_by_hash(hash_token(token))
    if refused:
        assert response.status_code == 403
        assert "Set-Cookie" not in response.headers
        assert row is not None and row.user_id == user.id
        assert (await client.get("/api/me")).status_code == 200
        if kind == "json":
            assert (await response.get_json())["error"] == "cross_origin"
        else:
            assert "only be sent from this site" in await response.get_data(as_text=True)
    else:
        assert response.status_code == (ok_status if method == "POST" else 405)
        assert (row is None) is (method == "POST")


@pytest.mark.parametrize(
    ("origin", "hops", "refused"),
    [
        ("https://auth.example.com", 1, False),  # nginx passed the public host on
        ("https://evil.example", 1, True),
        ("https://auth.example.com", 0, True),  # without a trusted proxy: compared with Host
    ],
)
async def test_behind_a_trusted_proxy_origin_is_checked_against_the_forwarded_host(
    config: dict[str, Any], origin: str, hops: int, refused: bool
) -> None:
    app = create_app({**config, "TRUSTED_PROXY_HOPS": hops})
    async with app.test_app():
        headers = {
            "Host": "10.0.0.11:5000",  # nginx's upstream address
            "X-Forwarded-Host": "auth.example.com",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "Origin": origin,
        }
        response = await app.test_client().post("/api/logout", json={}, headers=headers)
        assert response.status_code == (403 if refused else 204)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_safe_methods_pass_even_cross_site(auth_client: QuartClient, method: str) -> None:
    response = await auth_client.open(
        "/logout", method=method, headers=_headers("cross-site", "https://attacker.example")
    )
    assert response.status_code == 200


async def test_cross_site_sign_in_creates_no_session(
    app: Quart, client: QuartClient, user: User
) -> None:
    response = await client.post(
        "/login",
        form={"email": user.email, "password": PASSWORD},
        headers=_headers("cross-site", "https://attacker.example"),
    )
    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers
    assert await store(app).count_sessions() == 0


async def test_cross_site_password_change_changes_nothing(app: Quart, user: User) -> None:
    client = await authenticated_client(app, user)
    other = await authenticated_client(app, user)
    response = await client.post(
        "/account/password",
        form={"current_password": PASSWORD, "new_password": "a completely new passphrase 42"},
        headers=_headers(None, "https://attacker.example"),
    )
    assert response.status_code == 403
    stored = await store(app).select_user_by_id(user.id)
    assert stored is not None and stored.password_hash == user.password_hash
    assert (await other.get("/api/me")).status_code == 200


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/api/login", {"form": {"email": "ada@example.com", "password": PASSWORD}}),
        (
            "/api/login",
            {"data": '{"email": "ada@example.com"}', "headers": {"Content-Type": "text/plain"}},
        ),
        (
            "/api/register",
            {"data": "{}", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        ),
        (
            "/api/logout",
            {"data": "", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
        ),
        ("/api/password", {"data": "{}", "headers": {"Content-Length": "2"}}),
    ],
    ids=["form", "text-plain", "urlencoded-json", "multipart", "no-content-type"],
)
async def test_json_endpoints_accept_only_json(
    app: Quart, client: QuartClient, user: User, path: str, kwargs: dict[str, Any]
) -> None:
    response = await client.post(path, **kwargs)
    assert response.status_code == 415
    assert (await response.get_json())["error"] == "unsupported_media_type"
    assert await store(app).count_sessions() == 0


# --- security headers ----------------------------------------------------------------------------

ANONYMOUS_PAGES = ["/", "/login", "/register", "/logout", "/no-such-page"]
SIGNED_IN_PAGES = ["/", "/protected", "/account", "/logout"]


async def _html_responses(app: Quart, user: User) -> list[tuple[str, Any]]:
    anonymous = app.test_client()
    signed_in = await authenticated_client(app, user)
    responses = [(f"anonymous {p}", await anonymous.get(p)) for p in ANONYMOUS_PAGES]
    responses += [(f"signed in {p}", await signed_in.get(p)) for p in SIGNED_IN_PAGES]
    responses.append(
        (
            "failed login",
            await anonymous.post("/login", form={"email": "x@y.z", "password": "nope"}),
        )
    )
    responses.append(
        (
            "cross-origin error",
            await anonymous.post("/logout", headers={"Sec-Fetch-Site": "cross-site"}),
        )
    )
    responses.append(("method not allowed", await anonymous.delete("/login")))
    for label, response in responses:
        assert response.mimetype == "text/html", label
    return responses


def _csp(value: str) -> dict[str, str]:
    directives = (part.strip().split(None, 1) for part in value.split(";") if part.strip())
    return {d[0]: (d[1] if len(d) > 1 else "") for d in directives}


REQUIRED_CSP = {
    "default-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}

HEADER_CHECKS = {
    "Content-Security-Policy": lambda v: (
        all(_csp(v).get(k) == w for k, w in REQUIRED_CSP.items())
        and "unsafe-inline" not in v
        and "unsafe-eval" not in v
    ),
    "X-Frame-Options": lambda v: v == "DENY",
    "X-Content-Type-Options": lambda v: v == "nosniff",
    "Referrer-Policy": lambda v: (
        v in ("no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin")
    ),
    "Cross-Origin-Opener-Policy": lambda v: v == "same-origin",
}


@pytest.mark.parametrize("header", HEADER_CHECKS)
async def test_every_html_response_carries_the_security_header(
    app: Quart, user: User, header: str
) -> None:
    for label, response in await _html_responses(app, user):
        value = response.headers.get(header)
        assert value is not None, f"{header} missing on {label}"
        assert HEADER_CHECKS[header](value), f"{header}: {value!r} on {label}"


class _InlineCode(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, styles and event handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            if names.get("src"):
                self.external.append(names["src"] or "")
            else:
                self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.found.append(f"{name}= on <{tag}>")
            if name in ("href", "src", "action") and (value or "").lower().startswith(
                "javascript:"
            ):
                self.found.append(f"javascript: URL on <{tag}>")


async def test_pages_work_under_the_csp_without_inline_code(app: Quart, user: User) -> None:
    for label, response in await _html_responses(app, user):
        parser = _InlineCode()
        parser.feed(await response.get_data(as_text=True))
        assert parser.found == [], label
        for src in parser.external:  # scripts come from this site: 'self'
            assert src.startswith("/"), (label, src)


async def test_no_cors_headers_even_when_asked(auth_client: QuartClient) -> None:
    asked = {"Origin": "https://attacker.example"}
    preflight = {
        **asked,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    responses = [
        await auth_client.get("/api/me", headers=asked),
        await auth_client.get("/api/sessions", headers=asked),
        await auth_client.options("/api/login", headers=preflight),
        await auth_client.options("/api/password", headers=preflight),
        await auth_client.get("/openapi.json", headers=asked),
    ]
    for response in responses:
        assert response.status_code < 400
        leaked = [
            name for name, _ in response.headers.items() if name.lower().startswith("access-")
        ]
        assert leaked == []


# --- caching: signed-in pages and sign-in/out responses ------------------------------------------


def _no_store(response: Any) -> None:
    assert "no-store" in response.headers.get("Cache-Control", "")
    assert "cookie" in {v.strip().lower() for v in response.headers.get("Vary", "").split(",")}


@pytest.mark.parametrize("path", [*SIGNED_IN_PAGES, "/api/me", "/api/sessions"])
async def test_signed_in_pages_are_not_cached(auth_client: QuartClient, path: str) -> None:
    response = await auth_client.get(path)
    assert response.status_code == 200
    _no_store(response)


SIGN_IN_OUT = [
    ("POST", "/login", {"form": {"email": "ada@example.com", "password": PASSWORD}}, 303),
    ("POST", "/login", {"form": {"email": "ada@example.com", "password": "wrong password"}}, 401),
    ("POST", "/api/login", {"json": {"email": "ada@example.com", "password": PASSWORD}}, 200),
    (
        "POST",
        "/api/login",
        {"json": {"email": "ada@example.com", "password": "wrong password"}},
        401,
    ),
    (
        "POST",
        "/register",
        {"form": {"email": "bob@example.com", "password": "bob's long passphrase 7"}},
        303,
    ),
    (
        "POST",
        "/api/register",
        {"json": {"email": "cy@example.com", "password": "cy's long passphrase 7"}},
        201,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"), SIGN_IN_OUT, ids=[f"{s[1]}-{s[3]}" for s in SIGN_IN_OUT]
)
async def test_sign_in_responses_are_not_cached(
    client: QuartClient, user: User, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = await client.open(path, method=method, **kwargs)
    assert response.status_code == status
    _no_store(response)


@pytest.mark.parametrize(("path", "status"), [("/logout", 303), ("/api/logout", 204)])
async def test_sign_out_responses_are_not_cached(
    auth_client: QuartClient, path: str, status: int
) -> None:
    response = (
        await auth_client.post(path, json={}) if "api" in path else await auth_client.post(path)
    )
    assert response.status_code == status
    _no_store(response)


async def test_static_files_may_be_cached(client: QuartClient) -> None:
    response = await client.get("/static/style.css")
    assert response.status_code == 200
    assert "no-store" not in response.headers.get("Cache-Control", "")


async def test_a_missing_static_file_is_not_cached(auth_client: QuartClient) -> None:
    """The 404 page is rendered in the layout (who is signed in, their flashes): private."""
    response = await auth_client.get("/static/no-such-file.css")
    assert response.status_code == 404
    _no_store(response)


# --- nothing reveals the server ------------------------------------------------------------------


VERSION = re.compile(r"(hypercorn|quart|werkzeug|python|uvloop)[/ -]v?\d+\.\d+", re.IGNORECASE)


@pytest.mark.integration
def test_real_server_sends_no_server_header(tmp_path: Path) -> None:
    env = {"QUART_DATABASE": str(tmp_path / "db.sqlite3"), "QUART_SECRET_KEY": "x"}
    with servers.running(tmp_path, env, workers=1) as server:
        for path in ("/", "/login", "/no-such-page", "/api/me", "/healthz"):
            response = httpx.get(server.url + path, timeout=10)
            assert "server" not in response.headers, path
            assert "x-powered-by" not in response.headers, path
            # the stack may be named; its versions may not
            assert not VERSION.search(response.text), path
        malformed = httpx.post(
            server.url + "/api/login",
            content=b"{",
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert malformed.status_code == 400
        assert "server" not in malformed.headers


# --- open redirects via `next` -------------------------------------------------------------------

OPEN_REDIRECTS = [
    "//evil.example",
    "//evil.example/path",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "https://evil.example",
    "http:evil.example",
    "HTTPS://evil.example/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    " //evil.example",
    "%2F%2Fevil.example",
    "%2f%2fevil.example",
    "%5C%5Cevil.example",
    "evil.example",
    "@evil.example",
    "//evil.example%2F@example.com",
    "/\x00/evil.example",
    "",
]
# Odd but local: a browser resolves these to a path on this site.
LOCAL_ODDITIES = ["/%2F/evil.example", "/%5Cevil.example", "/%09/evil.example"]


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
@pytest.mark.parametrize("via", ["form", "query"])
async def test_next_never_leaves_the_site(
    client: QuartClient, user: User, target: str, via: str
) -> None:
    form = {"email": user.email, "password": PASSWORD}
    if via == "form":
        response = await client.post("/login", form={**form, "next": target})
    else:
        response = await client.post("/login", form=form, query_string={"next": target})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("target", LOCAL_ODDITIES)
async def test_encoded_slashes_stay_local_paths(
    client: QuartClient, user: User, target: str
) -> None:
    response = await client.post(
        "/login", form={"email": user.email, "password": PASSWORD, "next": target}
    )
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location == target
    assert urlsplit(location).netloc == "" and not location.startswith(("//", "/\\"))


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
async def test_login_form_does_not_echo_a_foreign_next(client: QuartClient, target: str) -> None:
    response = await client.get("/login", query_string={"next": target})
    assert response.status_code == 200
    html = await response.get_data(as_text=True)
    assert "evil" not in html
    assert "javascript:" not in html.lower() and "data:text" not in html


@pytest.mark.parametrize("target", ["/protected", "/account?tab=sessions", "/a/b?c=d&e=f"])
async def test_local_next_is_followed(client: QuartClient, user: User, target: str) -> None:
    response = await client.post(
        "/login", form={"email": user.email, "password": PASSWORD, "next": target}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == target


async def test_protected_redirect_round_trip(client: QuartClient, user: User) -> None:
    first = await client.get("/protected")
    assert first.status_code in (302, 303)
    assert first.headers["Location"] == "/login?next=/protected"
    signed_in = await client.post(
        "/login?next=/protected", form={"email": user.email, "password": PASSWORD}
    )
    assert signed_in.headers["Location"] == "/protected"
    assert (await client.get("/protected")).status_code == 200
