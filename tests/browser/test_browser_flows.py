"""Every flow of SPEC §3 in a real Chromium against the real Hypercorn (issue 4)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect
from servers import Server, running

from browser.browserkit import (
    GENEROUS,
    PASSWORD,
    PHONE,
    ContextFactory,
    open_contexts,
    screenshot,
    unique_email,
)

pytestmark = pytest.mark.browser

FIREFOX_UA = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def register(page: Page, email: str, name: str, password: str = PASSWORD) -> None:
    """Sign up through the registration page."""
    page.goto("/register")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Name (optional)").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account").click()


def sign_in(page: Page, email: str, password: str = PASSWORD, remember: bool = False) -> None:
    """Fill in and send the sign-in form of the page that is open."""
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    if remember:
        page.get_by_label("Remember me").check()
    page.get_by_role("button", name="Sign in", exact=True).click()


def new_user(page: Page, tag: str, name: str) -> str:
    """Register a fresh user, sign out again and return the email."""
    email = unique_email(tag)
    register(page, email, name)
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Welcome, {name}!")
    page.get_by_role("navigation").get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    return email


def test_register_lands_on_the_welcome_page(page: Page) -> None:
    register(page, unique_email("reg"), "Grace <b>Hopper</b>")

    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, Grace <b>Hopper</b>!")
    expect(page.locator(".flash-success")).to_contain_text("Your account is ready")
    expect(page.get_by_role("navigation")).to_contain_text("Signed in as Grace <b>Hopper</b>")
    assert page.locator("b").count() == 0  # the name was escaped, not rendered
    screenshot(page, "flow-welcome")


def test_register_refuses_a_common_password_and_keeps_what_was_typed(page: Page) -> None:
    email = unique_email("weak")
    register(page, email, "Weak Will", password="password123")

    expect(page.get_by_role("heading", level=1)).to_have_text("Create an account")
    password = page.get_by_label("Password")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#password-error")).to_be_visible()
    expect(password).to_have_value("")
    expect(page.get_by_label("Email")).to_have_value(email)
    expect(page.get_by_label("Name (optional)")).to_have_value("Weak Will")
    assert "password123" not in page.content()
    screenshot(page, "flow-register-errors")


def test_sign_out_says_so_and_ends_the_session(page: Page) -> None:
    register(page, unique_email("out"), "Otto")
    page.get_by_role("main").get_by_role("button", name="Log out").click()

    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator(".flash-info")).to_have_text("You have been logged out.")
    expect(page.get_by_role("navigation")).to_contain_text("Sign in")
    page.goto("/protected")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fprotected$|/login\?next=/protected$"))


def test_wrong_password_shows_the_message_and_keeps_the_email(page: Page) -> None:
    email = new_user(page, "wrong", "Wendy")

    with page.expect_response(
        lambda r: r.request.method == "POST" and "/api/" not in r.url
    ) as answer:
        sign_in(page, email, "not the password at all")

    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("Invalid credentials. Please try again.")
    expect(page.get_by_label("Email")).to_have_value(email)
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page.get_by_label("Password")).to_be_focused()
    screenshot(page, "flow-login-wrong-password")


def test_sign_in_then_protected_page(page: Page) -> None:
    email = new_user(page, "signin", "Sid")
    sign_in(page, email)

    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".flash-success")).to_have_text("Welcome, Sid!")
    page.get_by_role("navigation").get_by_role("link", name="Protected").click()
    expect(page).to_have_url(re.compile(r"/protected$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome to the protected area, Sid")


def test_anonymous_protected_goes_to_login_and_back(page: Page) -> None:
    email = new_user(page, "next", "Nell")
    page.goto("/protected")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    sign_in(page, email)

    expect(page).to_have_url(re.compile(r"/protected$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome to the protected area, Nell")


@pytest.mark.parametrize("remember", [True, False], ids=["remembered", "not-remembered"])
def test_remember_me_survives_a_browser_restart(
    new_context: ContextFactory, remember: bool
) -> None:
    first = new_context()
    page = first.new_page()
    email = new_user(page, "remember", "Remy")
    sign_in(page, email, remember=remember)
    expect(page).to_have_url(re.compile(r"/$"))

    session_cookies = [c for c in first.cookies() if c["name"] == "session"]
    assert len(session_cookies) == 1
    # A browser restart keeps persistent cookies and drops browser-session ones (expires == -1).
    kept = [c for c in first.cookies() if c["expires"] > 0]
    first.close()
    restarted = new_context(storage_state={"cookies": kept, "origins": []})
    page = restarted.new_page()
    page.goto("/protected")

    if remember:
        assert session_cookies[0]["expires"] > 0
        expect(page).to_have_url(re.compile(r"/protected$"))
        expect(page.get_by_role("heading", level=1)).to_contain_text("Remy")
    else:
        assert session_cookies[0]["expires"] == -1
        expect(page).to_have_url(re.compile(r"/login\?next="))


def test_two_browsers_two_sessions_and_revoking_the_other(new_context: ContextFactory) -> None:
    mine = new_context().new_page()
    email = new_user(mine, "two", "Tess")
    sign_in(mine, email)
    other = new_context(user_agent=FIREFOX_UA).new_page()
    other.goto("/login")
    sign_in(other, email)
    expect(other).to_have_url(re.compile(r"/$"))

    mine.goto("/account")
    rows = mine.locator("table.sessions tbody tr")
    expect(rows).to_have_count(2)
    expect(mine.locator("tr.current")).to_contain_text("this device")
    firefox = rows.filter(has_text="Firefox 128 on Ubuntu")
    expect(firefox).to_have_count(1)
    expect(firefox.locator("time").first).to_have_attribute("title", re.compile(r"UTC$"))
    expect(firefox.locator("time").first).to_have_text(re.compile(r"just now|ago$"))
    screenshot(mine, "flow-account-two-sessions")

    firefox.get_by_role("button", name=re.compile("^Revoke")).click()
    expect(mine.locator(".flash-success")).to_have_text("The session has been signed out.")
    expect(rows).to_have_count(1)

    other.get_by_role("navigation").get_by_role("link", name="Protected").click()
    expect(other).to_have_url(re.compile(r"/login\?next="))
    expect(other.get_by_role("navigation")).to_contain_text("Sign in")


def test_change_password(new_context: ContextFactory) -> None:
    page = new_context().new_page()
    email = new_user(page, "pw", "Pat")
    sign_in(page, email)
    page.goto("/account")

    page.get_by_label("Current password").fill("not my password")
    page.get_by_label("New password").fill("amber quartz lantern 77")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_label("Current password")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#current_password-error")).to_have_text(
        "The current password is not right."
    )
    screenshot(page, "flow-account-password-error")

    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill("amber quartz lantern 77")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator(".flash-success")).to_contain_text("Your password has been changed.")

    page.get_by_role("navigation").get_by_role("button", name="Log out").click()
    sign_in(page, email, PASSWORD)
    expect(page.get_by_role("alert")).to_have_text("Invalid credentials. Please try again.")
    sign_in(page, email, "amber quartz lantern 77")
    expect(page.locator(".flash-success")).to_have_text("Welcome, Pat!")


def test_throttling_message_after_repeated_failures(browser: Browser, tmp_path: Path) -> None:
    env = {
        "QUART_DATABASE": str(tmp_path / "throttle.sqlite3"),
        **GENEROUS,
        "QUART_THROTTLE_ACCOUNT_FAILURES": "3",
    }
    with running(tmp_path, env, workers=1) as server:
        factory, watch, opened = open_contexts(browser, server.url)
        own = factory().new_page()
        email = new_user(own, "throttle", "Theo")
        # Another browser, which has never signed in to the account (no device cookie):
        # the one that signed up would be counted against its own allowance instead.
        page = factory().new_page()
        page.goto(f"{server.url}/login")
        statuses = []
        for _ in range(4):
            with page.expect_response(
                lambda r: r.request.method == "POST" and "/api/" not in r.url
            ) as answer:
                sign_in(page, email, "wrong password here")
            statuses.append(answer.value.status)
        assert statuses == [401, 401, 401, 429]
        alert = page.get_by_role("alert")
        expect(alert).to_have_text(
            re.compile(r"Too many attempts\. Please wait \d+ (second|minute)s?")
        )
        expect(page.get_by_label("Email")).to_have_value(email)
        screenshot(page, "flow-login-throttled")

        with page.expect_response(
            lambda r: r.request.method == "POST" and "/api/" not in r.url
        ) as answer:
            sign_in(page, email)  # even the right password waits out the lockout
        assert answer.value.status == 429

        # The owner's own browser (it signed up, so it holds a device cookie) gets in.
        with own.expect_response(
            lambda r: r.request.method == "POST" and "/api/" not in r.url
        ) as answer:
            sign_in(own, email)
        assert answer.value.status == 303
        expect(own.get_by_role("heading", level=1)).to_have_text("Welcome, Theo!")
        for context in opened:
            context.close()
    assert watch.problems == []


def test_landing_page_registers_without_javascript(new_context: ContextFactory) -> None:
    page = new_context(java_script_enabled=False).new_page()
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    switch = page.locator("details.switch")
    expect(switch.get_by_label("Email")).to_be_hidden()
    switch.get_by_text("New here? Create an account").click()
    switch.get_by_label("Email").fill(unique_email("nojs"))
    switch.get_by_label("Password").fill(PASSWORD)
    switch.get_by_role("button", name="Create account").click()

    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Welcome, nojs-"))


def test_submit_button_is_disabled_while_submitting(page: Page) -> None:
    held: list[Route] = []

    def hold_posts(route: Route) -> None:
        if route.request.method == "POST":
            held.append(route)
        else:
            route.continue_()

    page.route("**/login", hold_posts)
    page.goto("/login")
    page.get_by_label("Email").fill(unique_email("busy"))
    page.get_by_label("Password").fill("whatever it is")
    button = page.get_by_role("button", name="Sign in", exact=True)
    expect(button).to_be_enabled()
    # While the navigation is pending Playwright cannot evaluate in the page, so the page
    # reports the disabled button itself with a same-origin request we can wait for.
    button.evaluate(
        """(b) => new MutationObserver(() => {
             if (b.disabled && b.getAttribute("aria-busy") === "true") fetch("/healthz?busy");
           }).observe(b, {attributes: true})"""
    )
    with page.expect_request("**/healthz?busy"):
        button.click(no_wait_after=True)

    for _ in range(100):  # let Playwright deliver the held POST to our handler
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    held[0].continue_()
    expect(page.get_by_role("alert")).to_have_text("Invalid credentials. Please try again.")
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_enabled()


def test_phone_layout_fits_the_screen(new_context: ContextFactory) -> None:
    page = new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    email = new_user(page, "phone", "Phil")
    sign_in(page, email)
    for path in ["/", "/protected", "/account", "/login", "/logout"]:
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone"


@pytest.mark.parametrize(
    ("path", "status", "heading"),
    [
        ("/no-such-page", 404, "Page not found"),
        ("/account/password", 405, "Method not allowed"),
    ],
)
def test_error_pages_in_the_layout_with_a_way_back(
    page: Page, path: str, status: int, heading: str
) -> None:
    response = page.goto(path)
    assert response is not None and response.status == status
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    expect(page.locator(".status-code")).to_have_text(f"Error {status}")
    page.get_by_role("link", name="Back to the home page").click()
    expect(page).to_have_url(re.compile(r"/$"))


def test_oversized_form_gets_the_413_page(page: Page) -> None:
    page.goto("/login")
    email = page.get_by_label("Email")
    email.evaluate("(input) => { input.type = 'text'; input.removeAttribute('maxlength'); }")
    email.fill("x" * 70_000)
    page.get_by_label("Password").fill("whatever")
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/api/" not in r.url
    ) as answer:
        page.get_by_role("button", name="Sign in", exact=True).click()

    assert answer.value.status == 413
    expect(page.get_by_role("heading", level=1)).to_have_text("Too large")
    expect(page.get_by_role("link", name="Back to the home page")).to_be_visible()


def test_cross_site_form_gets_the_403_page(page: Page, server: Server) -> None:
    """A form on another site posting to ours is refused (Sec-Fetch-Site), shown as a page."""
    page.route(
        "http://evil.test/",
        lambda route: route.fulfill(
            content_type="text/html",
            body=(
                f'<form method="post" action="{server.url}/logout">'
                '<button type="submit">Win a prize</button></form>'
            ),
        ),
    )
    page.goto("http://evil.test/")
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/api/" not in r.url
    ) as answer:
        page.get_by_role("button", name="Win a prize").click()

    assert answer.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.locator(".card")).to_contain_text("Cross-origin request refused")


def test_watch_catches_csp_violations(browser: Browser) -> None:
    """The watcher itself can fail: an inline script blocked by a CSP is reported."""
    factory, watch, opened = open_contexts(browser, "http://127.0.0.1:1")
    page = factory().new_page()
    page.route(
        "http://csp.test/",
        lambda route: route.fulfill(
            content_type="text/html",
            headers={"Content-Security-Policy": "script-src 'self'"},
            body="<h1>x</h1><script>document.title = 'ran'</script>",
        ),
    )
    page.goto("http://csp.test/")
    for _ in range(100):  # console events arrive asynchronously
        if watch.problems:
            break
        page.wait_for_timeout(50)
    assert page.title() == ""  # the inline script really was blocked
    for context in opened:
        context.close()
    assert any("Content Security Policy" in problem for problem in watch.problems)
