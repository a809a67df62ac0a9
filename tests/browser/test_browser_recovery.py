"""Mail and the account's life (SPEC §11) in a real Chromium against the real Hypercorn.

The server sends its mail to a real SMTP server on loopback; each flow reads the message
that arrived and follows the link in it, the way a person would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from servers import Server
from smtp import MailServer, links

from browser.accounts import inbox, link_in, log_out, mailing_server, register, sign_in
from browser.browserkit import (
    DESKTOP,
    PASSWORD,
    PHONE,
    ContextFactory,
    open_contexts,
    screenshot,
    unique_email,
)
from browser.test_browser_a11y import audit

pytestmark = pytest.mark.browser

NEW_PASSWORD = "amber quartz lantern 77"
INVALID = "This link is invalid or has expired."
JAVASCRIPT = pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mail: MailServer) -> Iterator[Server]:
    """Overrides the package's shared server: this one mails through `mail`."""
    with mailing_server(tmp_path_factory.mktemp("browser-recovery"), mail) as started:
        yield started


def forgot(page: Page, email: str) -> str:
    """Ask for a reset link from the login page; the confirmation shown."""
    page.goto("/login")
    page.get_by_role("link", name="Forgot your password?").click()
    expect(page).to_have_url(re.compile(r"/password/forgot$"))
    page.get_by_label("Email").fill(email)
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/api/" not in r.url
    ) as answer:
        page.get_by_role("button", name="Send the link").click()
    assert answer.value.status == 200
    return page.get_by_role("status").inner_text()


def sent_text(email: str) -> str:
    return (
        f"If an account exists for {email}, a link to reset its password is on its way. "
        "It works for 60 minutes."
    )


@JAVASCRIPT
def test_forgot_password_mail_link_and_new_password(
    new_context: ContextFactory, mail: MailServer, server: Server, javascript: bool
) -> None:
    page = new_context(java_script_enabled=javascript).new_page()
    email = unique_email("forgot")
    register(page, email, "Fay")
    log_out(page)

    unknown = unique_email("nobody")
    assert forgot(page, unknown) == sent_text(unknown)
    assert forgot(page, email) == sent_text(email)
    link = link_in(inbox(page, mail, email, "Reset your password")[0], server, "/password/reset/")
    token = link.rsplit("/", 1)[1]

    response = page.goto(link)
    assert response is not None and response.status == 200
    expect(page).to_have_url(f"{server.url}/password/reset")
    assert token not in page.url
    expect(page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
    expect(page.get_by_role("main")).to_contain_text(f"For {email}.")
    page.get_by_label("New password").fill("password123")
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/api/" not in r.url
    ) as answer:
        page.get_by_role("button", name="Set the new password").click()
    assert answer.value.status == 400  # too common: refused, and the link still works
    expect(page.get_by_label("New password")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#new_password-error")).to_be_visible()
    assert "password123" not in page.content()
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set the new password").click()

    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator(".flash-success")).to_have_text(
        "Your password has been reset. Please sign in."
    )
    inbox(page, mail, email, "Your password was changed")
    sign_in(page, email, PASSWORD)
    expect(page.get_by_role("alert")).to_have_text("Invalid credentials. Please try again.")
    sign_in(page, email, NEW_PASSWORD)
    expect(page.locator(".flash-success")).to_have_text("Welcome, Fay!")
    assert mail.to(unknown) == []  # no account, no mail

    response = page.goto(link)  # used up: answered at the link, nothing stored for it
    assert response is not None and response.status == 400
    assert response.headers["referrer-policy"] == "no-referrer"
    expect(page).to_have_url(link)
    expect(page.get_by_role("main")).to_contain_text(INVALID)
    page.get_by_role("link", name="Ask for a new reset link").click()
    expect(page).to_have_url(re.compile(r"/password/forgot$"))
    expect(page.get_by_label("Email")).to_be_visible()


def test_verify_email_from_the_sign_up_mail(
    new_context: ContextFactory, mail: MailServer, server: Server
) -> None:
    page = new_context().new_page()
    email = unique_email("verify")
    register(page, email, "Vera")
    page.goto("/account")
    expect(page.locator(".lead .badge")).to_have_text("not verified")
    link = link_in(
        inbox(page, mail, email, "Confirm your email address")[0], server, "/email/verify/"
    )

    page.goto(link)  # a mail scanner's GET uses nothing up
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your email address")
    page.get_by_role("button", name="Verify my address").click()

    expect(page).to_have_url(re.compile(r"/account$"))
    expect(page.locator(".flash-success")).to_have_text(f"Thank you: {email} is verified.")
    expect(page.locator(".lead .badge")).to_have_text("verified")
    expect(page.get_by_role("button", name="Send it again")).to_have_count(0)

    page.goto(link)
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/api/" not in r.url
    ) as answer:
        page.get_by_role("button", name="Verify my address").click()
    assert answer.value.status == 400
    expect(page.get_by_role("main")).to_contain_text(INVALID)


def test_delete_account_without_javascript(
    new_context: ContextFactory, mail: MailServer, server: Server
) -> None:
    context = new_context(java_script_enabled=False, accept_downloads=True)
    page = context.new_page()
    email = unique_email("delete")
    register(page, email, "Dee")
    page.goto("/account")
    page.get_by_role("link", name="Delete my account…").click()
    expect(page).to_have_url(re.compile(r"/account/delete$"))  # signing up proved identity
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete your account")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download your data").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["profile"]["email"] == email

    page.get_by_role("button", name="Delete my account").click()
    expect(page).to_have_url(f"{server.url}/")
    expect(page.locator(".flash-info")).to_have_text("Your account has been deleted. Goodbye!")
    expect(page.get_by_role("navigation")).to_contain_text("Sign in")
    inbox(page, mail, email, "Your account was deleted")

    page.goto("/account")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    sign_in(page, email, PASSWORD)
    expect(page.get_by_role("alert")).to_have_text("Invalid credentials. Please try again.")


def test_unverified_user_fixes_the_address_after_reauthenticating_without_javascript(
    browser: Browser, mail: MailServer, tmp_path: Path
) -> None:
    """REQUIRE_VERIFIED_EMAIL and a short REAUTH_WINDOW: from "check your email", through
    the password prompt, to a confirmed new address."""
    config = {"REQUIRE_VERIFIED_EMAIL": "true", "REAUTH_WINDOW": "3"}
    with mailing_server(tmp_path, mail, workers=1, **config) as strict:
        factory, watch, opened = open_contexts(browser, strict.url)
        page = factory(java_script_enabled=False).new_page()
        email, new_email = unique_email("typo"), unique_email("fixed")
        register(page, email, "Tia")
        page.goto("/protected")
        expect(page).to_have_url(re.compile(r"/email/unverified$"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
        inbox(page, mail, email, "Confirm your email address")
        page.get_by_role("button", name="Send the link again").click()
        expect(page).to_have_url(re.compile(r"/email/unverified$"))
        expect(page.locator(".flash-info")).to_have_text(f"A new link is on its way to {email}.")
        first, second = inbox(page, mail, email, "Confirm your email address", count=2)
        assert links(first) != links(second)  # each mail its own link

        page.wait_for_timeout(3100)  # the proof of signing up runs out
        page.get_by_role("link", name="Change it").click()
        expect(page).to_have_url(re.compile(r"/reauthenticate\?next=/account/email$"))
        page.get_by_label("Password").fill("not my password")
        page.get_by_role("button", name="Confirm").click()
        expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Confirm").click()

        expect(page).to_have_url(re.compile(r"/account/email$"))
        page.get_by_label("New email address").fill(new_email)
        page.get_by_role("button", name="Send the confirmation link").click()
        expect(page).to_have_url(re.compile(r"/email/unverified$"))  # still unverified
        expect(page.locator(".flash-info")).to_contain_text(new_email)
        message = inbox(page, mail, new_email, "Confirm your new email address")[0]
        page.goto(link_in(message, strict, "/email/change/"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your new email address")
        page.get_by_role("button", name="Use the new address").click()

        expect(page).to_have_url(re.compile(r"/account$"))  # following the link verified it
        expect(page.locator(".flash-success")).to_have_text(
            f"Your email address is now {new_email}."
        )
        expect(page.locator(".lead .badge")).to_have_text("verified")
        inbox(page, mail, email, "Your email address was changed")
        for context in opened:
            context.close()
    assert watch.problems == []


@pytest.fixture(scope="module")
def gallery_links(browser: Browser, server: Server, mail: MailServer) -> Iterator[dict[str, str]]:
    """One user's live reset and verify links: a link's GET uses nothing up."""
    factory, watch, opened = open_contexts(browser, server.url)
    page = factory().new_page()
    email = unique_email("gallery")
    register(page, email, "Ada Lovelace")
    verify = inbox(page, mail, email, "Confirm your email address")[0]
    log_out(page)
    forgot(page, email)
    reset = inbox(page, mail, email, "Reset your password")[0]
    yield {
        "reset": link_in(reset, server, "/password/reset/"),
        "verify": link_in(verify, server, "/email/verify/"),
    }
    for context in opened:
        context.close()
    assert watch.problems == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("size", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_mailed_link_pages_look_right(
    new_context: ContextFactory,
    gallery_links: dict[str, str],
    axe: str | None,
    size: str,
    viewport: dict[str, int],
    scheme: str,
) -> None:
    """The pages only a mailed link reaches, shot and audited (the a11y module has the rest)."""
    mobile = {"is_mobile": True, "has_touch": True} if size == "phone" else {}
    page = new_context(viewport=viewport, color_scheme=scheme, **mobile).new_page()
    problems: dict[str, list[str]] = {}

    def check(name: str) -> None:
        expect(page.locator("h1")).to_have_count(1)
        screenshot(page, f"recovery-{name}-{size}-{scheme}")
        found = audit(page, axe)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            found.append(f"scrolls sideways by {overflow}px")
        if found:
            problems[name] = found

    page.goto(gallery_links["reset"])
    check("reset")
    page.get_by_label("New password").fill("password123")
    page.get_by_role("button", name="Set the new password").click()
    expect(page.locator(".field-error")).to_be_visible()
    check("reset-weak")
    page.goto(gallery_links["verify"])
    check("confirm-verify")
    assert problems == {}


def test_reset_in_a_browser_still_signed_in_says_so(
    new_context: ContextFactory, mail: MailServer, server: Server
) -> None:
    """Someone remembered on this browser who forgot the password follows the link here."""
    page = new_context().new_page()
    email = unique_email("still")
    register(page, email, "Sia")
    page.goto("/password/forgot")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Send the link").click()
    link = link_in(inbox(page, mail, email, "Reset your password")[0], server, "/password/reset/")
    page.goto(link)
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set the new password").click()

    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("navigation")).to_contain_text("Sign in")  # signed out: right
    expect(page.locator(".flash-success")).to_have_text(
        "Your password has been reset. Please sign in.", timeout=2_000
    )
