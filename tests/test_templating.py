"""Template helpers and how the pages render: devices, times, error pages, form attributes."""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import pytest
from quart import Quart, flash, session, url_for
from quart.globals import request_ctx
from quart.testing import QuartClient

from quart_auth_app import create_app, rendering
from quart_auth_app.agents import describe as device
from quart_auth_app.errors import AppError, from_status
from quart_auth_app.rendering import awaits_nothing
from quart_auth_app.sessions import FLASHES
from quart_auth_app.templating import Flashes, PageURLs, ago, duration, when

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        (
            "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Firefox 128 on Ubuntu",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36",
            "Chrome 126 on Windows 10",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Mobile Safari 17 on iOS 17.5",
        ),
        ("", "Unknown device"),
        ("x" * 300, "x" * 60),
    ],
)
def test_device_names_browser_and_system(user_agent: str, expected: str) -> None:
    assert device(user_agent) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "just now"),
        (59, "just now"),
        (60, "1 minute ago"),
        (5 * 60 + 30, "5 minutes ago"),
        (3600, "1 hour ago"),
        (3 * 86400, "3 days ago"),
        (-30, "just now"),  # a clock a little ahead never says "in the future"
    ],
)
def test_ago(seconds: int, expected: str) -> None:
    assert ago(NOW - seconds, now=NOW) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (1, "1 second"),
        (45, "45 seconds"),
        (60, "1 minute"),
        (61, "2 minutes"),
        (900, "15 minutes"),
        (7200, "2 hours"),
        (0, "1 second"),
    ],
)
def test_duration_rounds_up(seconds: int, expected: str) -> None:
    assert duration(seconds) == expected


def test_when_gives_the_exact_time_on_hover() -> None:
    html = str(when(NOW))
    assert html.startswith(
        '<time datetime="2023-11-14 22:13:20 UTC" title="2023-11-14 22:13:20 UTC">'
    )
    assert html.endswith("ago</time>")


CASES = [
    (400, "Bad request", None),
    (403, "Not allowed", None),
    (404, "Page not found", None),
    (405, "Method not allowed", None),
    (413, "Too large", None),
    (429, "Slow down", "Please wait 15 minutes before trying again."),
    (500, "Something went wrong", None),
]


@pytest.fixture
async def error_app(config: dict[str, Any]) -> AsyncIterator[Quart]:
    """The app with two extra routes that fail on purpose."""
    app = create_app(config)

    @app.get("/fail/<int:status>")
    async def fail(status: int) -> str:
        wait = 900 if status == 429 else None
        raise AppError(status, "x", from_status(status).message, retry_after=wait)

    @app.get("/crash")
    async def crash() -> str:
        raise RuntimeError("boom")

    async with app.test_app():
        yield app


@pytest.mark.parametrize(("status", "heading", "wait"), CASES)
async def test_error_pages_in_the_layout(
    error_app: Quart, status: int, heading: str, wait: str | None
) -> None:
    client = error_app.test_client()
    response = await client.get("/crash" if status == 500 else f"/fail/{status}")
    body = await response.get_data(as_text=True)

    assert response.status_code == status
    assert response.content_type.startswith("text/html")
    assert f"<h1>{heading}</h1>" in body
    assert f"Error {status}" in body
    assert 'href="/">Back to the home page</a>' in body
    assert '<link rel="stylesheet" href="/static/style.css">' in body
    assert body.count(from_status(status).message) == 1
    assert (wait in body) if wait else ("Please wait" not in body)
    assert response.headers.get("Retry-After") == ("900" if wait else None)
    assert "boom" not in body and "Traceback" not in body


class Inputs(HTMLParser):
    """Every input's attributes, every label's target, and any inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.labels: set[str] = set()
        self.inline: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.append(str(found["id"]))
        if (
            tag == "input"
            and found.get("type") not in ("hidden", "checkbox")
            and "hidden" not in found
        ):
            self.inputs[str(found["id"])] = found
        if tag == "label":
            self.labels.add(str(found.get("for")))
        if "style" in found or (tag == "script" and "src" not in found) or tag == "style":
            self.inline.append(tag)
        if any(name.startswith("on") for name in found):
            self.inline.append(f"{tag} handler")


def parse(body: str) -> Inputs:
    parser = Inputs()
    parser.feed(body)
    return parser


LOGIN_FIELDS = {  # the email field also offers passkeys through autofill (SPEC §12)
    "email": {
        "type": "email",
        "autocomplete": "username webauthn",
        "required": "",
        "maxlength": "254",
    },
    "password": {"type": "password", "autocomplete": "current-password", "maxlength": "1024"},
}
REGISTER_FIELDS = {
    "email": {"type": "email", "autocomplete": "email", "required": "", "maxlength": "254"},
    "name": {"type": "text", "autocomplete": "name", "maxlength": "100"},
    "password": {
        "type": "password",
        "autocomplete": "new-password",
        "required": "",
        "minlength": "8",
        "maxlength": "1024",
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/login", LOGIN_FIELDS),
        ("/register", REGISTER_FIELDS),
        ("/", LOGIN_FIELDS | {f"new-{k}": v for k, v in REGISTER_FIELDS.items()}),
    ],
)
async def test_forms_carry_what_password_managers_need(
    client: QuartClient, path: str, expected: dict[str, dict[str, str]]
) -> None:
    page = parse(await (await client.get(path)).get_data(as_text=True))

    assert set(page.inputs) == set(expected)
    for input_id, attributes in expected.items():
        found = page.inputs[input_id]
        for name, value in attributes.items():
            assert (found.get(name) or "") == value, (input_id, name)
        assert input_id in page.labels
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    assert page.inline == []


async def test_account_form_and_sessions_table(auth_client: QuartClient) -> None:
    body = await (await auth_client.get("/account")).get_data(as_text=True)
    page = parse(body)

    assert page.inputs["current_password"]["autocomplete"] == "current-password"
    assert page.inputs["new_password"]["autocomplete"] == "new-password"
    assert page.inputs["new_password"]["minlength"] == "8"
    assert {"current_password", "new_password"} <= page.labels
    assert re.search(r'<tr class="current">.*?this device', body, re.S)
    assert page.inline == []


async def test_typed_values_are_kept_but_never_the_password(client: QuartClient) -> None:
    response = await client.post(
        "/register",
        form={"email": "not-an-email", "name": "<Eve>", "password": "hunter2-secret-typed"},
    )
    body = await response.get_data(as_text=True)
    page = parse(body)

    assert response.status_code == 400
    assert page.inputs["email"]["value"] == "not-an-email"
    assert page.inputs["email"]["aria-invalid"] == "true"
    assert page.inputs["email"]["aria-describedby"] == "email-error"
    assert page.inputs["name"]["value"] == "<Eve>"
    assert "&lt;Eve&gt;" in body
    assert "value" not in page.inputs["password"]
    assert "hunter2-secret-typed" not in body


async def test_rendering_runs_no_context_processor_in_a_thread(app: Quart) -> None:
    """Quart runs a synchronous context processor in its thread pool on every render."""
    processors = [p for group in app.template_context_processors.values() for p in group]
    assert processors
    assert all(inspect.iscoroutinefunction(p) for p in processors)


async def test_templates_still_get_request_session_and_user(client: QuartClient) -> None:
    response = await client.get("/login")
    body = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'href="/login" aria-current="page"' in body  # `request.endpoint` in the layout


async def test_forms_show_the_configured_limits(app: Quart) -> None:
    """The forms' attributes and hints come from the configuration the server enforces."""
    app.config.update(PASSWORD_MIN_LENGTH=12, PASSWORD_MAX_LENGTH=200, REMEMBER_LIFETIME=7 * 86400)
    register = await (await app.test_client().get("/register")).get_data(as_text=True)
    assert 'minlength="12"' in register and 'maxlength="200"' in register
    assert "At least 12 characters" in register and "At least 8" not in register
    login = await (await app.test_client().get("/login")).get_data(as_text=True)
    assert "for 7 days" in login and 'maxlength="200"' in login


async def test_pages_that_await_nothing_render_synchronously(app: Quart) -> None:
    """Quart's environment is async (an async generator step per chunk of output); pages
    that await nothing render with a synchronous overlay of it (SPEC §10, issue #13)."""
    assert awaits_nothing(app.jinja_env, "protected.html")
    assert awaits_nothing(app.jinja_env, "login.html")
    # _passkeys.html calls the async global passkeys_of; account.html includes it.
    assert not awaits_nothing(app.jinja_env, "_passkeys.html")
    assert not awaits_nothing(app.jinja_env, "account.html")


@pytest.mark.parametrize("path", ["/protected", "/", "/account", "/no-such-page"])
async def test_a_page_is_the_same_from_either_environment(
    auth_client: QuartClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    synchronous = await (await auth_client.get(path)).get_data(as_text=True)
    monkeypatch.setattr(rendering, "_synchronous", lambda *args: False)
    asynchronous = await (await auth_client.get(path)).get_data(as_text=True)
    assert "Ada" in synchronous
    assert synchronous == asynchronous


async def test_template_urls_are_built_once_and_match_url_for(app: Quart) -> None:
    urls = app.jinja_env.globals["url_for"]
    assert isinstance(urls, PageURLs)
    async with app.test_request_context("/protected"):
        for endpoint, values in [
            ("pages.index", {}),
            ("static", {"filename": "style.css"}),
            ("pages.login", {"next": "/account"}),
        ]:
            assert (
                urls(endpoint, **values) == urls(endpoint, **values) == url_for(endpoint, **values)
            )
        external = urls("pages.index", _external=True)
        assert external == url_for("pages.index", _external=True) == "http://localhost/"
    assert not any("_external" in str(key) for key in urls.built)
    async with app.test_request_context("/protected", root_path="/mounted"):
        assert urls("pages.index") == "/mounted/"


async def test_the_layout_links_are_url_for_and_follow_the_root_path(
    app: Quart, auth_client: QuartClient
) -> None:
    body = await (await auth_client.get("/protected")).get_data(as_text=True)
    async with app.test_request_context("/protected"):
        for endpoint, values in [
            ("pages.index", {}),
            ("static", {"filename": "style.css"}),
            ("static", {"filename": "app.js"}),
            ("pages.protected", {}),
            ("account.account", {}),
            ("pages.logout_post", {}),
        ]:
            assert f'="{url_for(endpoint, **values)}"' in body, endpoint
    mounted = await auth_client.get("/protected", root_path="/mounted")
    assert 'href="/mounted/static/style.css"' in await mounted.get_data(as_text=True)


async def test_flashes_are_taken_from_the_session_only_when_a_template_reads_them(
    app: Quart,
) -> None:
    async with app.test_request_context("/"):
        await flash("Saved.", "success")
        context = request_ctx._get_current_object()  # type: ignore[attr-defined]
        unread = Flashes(context)
        assert FLASHES in session  # made, not read: the flashes wait in the session
        read = Flashes(context)
        assert bool(read) is True
        assert list(read) == [("success", "Saved.")] == list(read)  # taken once, kept
        assert FLASHES not in session  # shown once: gone from the stored session
        assert list(unread) == [("success", "Saved.")]  # the request's, as Quart's helper
    async with app.test_request_context("/"):
        assert not Flashes(request_ctx._get_current_object())  # type: ignore[attr-defined]
