"""Two-step sign-in (SPEC §12) in a real Chromium against the real Hypercorn.

A person turns it on from the account page and types what their authenticator app shows:
the test reads the key printed under the QR code (and checks the QR code says the same) and
computes the codes with pyotp, as the app would. None of these pages needs JavaScript, so
the flows run without it; the gallery runs with it. Every page is watched (conftest.py):
a console error or a CSP violation fails the test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from urllib.parse import unquote

import pyotp
import pytest
import segno
from playwright.sync_api import Page, ViewportSize, expect
from servers import Server
from smtp import MailServer

from browser.accounts import inbox, log_out, mailing_server, register
from browser.browserkit import (
    DESKTOP,
    PASSWORD,
    PHONE,
    ContextFactory,
    screenshot,
    unique_email,
)
from browser.test_browser_a11y import audit

pytestmark = pytest.mark.browser

WRONG_CODE = "That code is not right. Please try again."
ISSUER = "quart_auth_app"
SVG_PATH = re.compile(r"""\sd=(['"])(.*?)\1""")
PATH_STEP = re.compile(r"([Mmh])(-?[\d.]+)(?:\s(-?[\d.]+))?")
REAUTH = 3  # seconds; short, so one test sees the password asked again without waiting long


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mail: MailServer) -> Iterator[Server]:
    """Overrides the package's shared server: this one mails through `mail`, and a
    password typed opens sensitive pages for REAUTH seconds only."""
    tmp = tmp_path_factory.mktemp("browser-two-step")
    with mailing_server(tmp, mail, REAUTH_WINDOW=str(REAUTH)) as started:
        yield started


def qr_modules(data_uri: str) -> set[tuple[int, int]]:
    """The dark modules of segno's SVG (one path of horizontal strokes), from the top-left."""
    svg = unquote(data_uri.split(",", 1)[1])
    found = SVG_PATH.search(svg)
    assert found, svg[:200]
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for command, first, second in PATH_STEP.findall(found[2]):
        if command == "M":
            x, y = float(first), float(second)
        elif command == "m":
            x, y = x + float(first), y + float(second)
        else:
            dark.update((int(x) + i, int(y)) for i in range(int(first)))
            x += float(first)
    left, top = min(px for px, _ in dark), min(py for _, py in dark)  # a finder's corner
    return {(px - left, py - top) for px, py in dark}


def encodes(data_uri: str, text: str) -> bool:
    """Whether the QR code drawn in `data_uri` says `text` (at whichever error level)."""
    shown = qr_modules(data_uri)
    for level in "lmqh":
        matrix = segno.make(text, error=level).matrix
        if shown == {(x, y) for y, row in enumerate(matrix) for x, dark in enumerate(row) if dark}:
            return True
    return False


def prove_if_asked(page: Page) -> bool:
    """Type the password if the page asks for it again (re-authentication); whether it did."""
    if not re.search(r"/reauthenticate\?next=", page.url):
        return False
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    return True


def press(page: Page, button: str) -> None:
    """Press a button of /account/two-step; if the proof ran out since the page opened, the
    password is asked, then the page is back and the button is pressed again."""
    page.get_by_role("button", name=button).click()
    if prove_if_asked(page):
        expect(page).to_have_url(re.compile(r"/account/two-step$"))
        page.get_by_role("button", name=button).click()


def open_two_step(page: Page, link: str = "Turn on two-step sign-in") -> bool:
    """From the account page to /account/two-step; whether the password was asked again."""
    page.goto("/account")
    page.get_by_role("link", name=link).click()
    asked = prove_if_asked(page)
    expect(page).to_have_url(re.compile(r"/account/two-step$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Two-step sign-in")
    return asked


def set_it_up(page: Page, email: str) -> str:
    """Press "Set it up"; check the QR code and read the key from the page."""
    press(page, "Set it up")
    expect(page).to_have_url(re.compile(r"/account/two-step/begin$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up two-step sign-in")
    qr = page.get_by_role("img", name="QR code for your authenticator app")
    expect(qr).to_be_visible()
    source = qr.get_attribute("src") or ""
    assert source.startswith("data:image/svg+xml")
    box = qr.bounding_box()
    assert box is not None and box["width"] >= 150 and box["height"] >= 150
    assert qr.evaluate("(img) => img.complete && img.naturalWidth > 0")
    shown = page.locator(".secret").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{4})+", shown), shown
    secret = shown.replace(" ", "")
    uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)
    assert encodes(source, uri)  # a phone scanning it gets the key printed under it
    return secret


def confirm(page: Page, code: str) -> list[str]:
    """Type the app's code on the setup page; the recovery codes shown."""
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Turn it on").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your recovery codes")
    expect(page.locator(".flash-success")).to_have_text(
        "Two-step sign-in is on. Other sessions were signed out."
    )
    codes = page.locator(".codes code").all_inner_texts()
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", code) for code in codes), codes
    return codes


def saved_them(page: Page, left: int) -> None:
    """Leave the recovery codes page for the account, which says two-step sign-in is on."""
    page.get_by_role("link", name="I have saved them").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    section = page.locator(".two-step")
    expect(section.locator(".badge")).to_have_text("on")
    expect(section).to_contain_text(f"{left} recovery code{'' if left == 1 else 's'} left")


def enrol(page: Page, email: str) -> tuple[str, list[str]]:
    """Turn two-step sign-in on from the account page: the key read and the recovery codes."""
    open_two_step(page)
    secret = set_it_up(page, email)
    codes = confirm(page, pyotp.TOTP(secret).now())
    saved_them(page, 10)
    return secret, codes


def sign_in(page: Page, email: str) -> None:
    """The password step, from the login page."""
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def next_code(secret: str) -> str:
    """The code of the next step: newer than any used so far, and within the drift allowed."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def not_a_code(secret: str) -> str:
    """Six digits no step near now has."""
    near = {pyotp.TOTP(secret).at(time.time() + 30 * step) for step in range(-2, 3)}
    return next(f"{n:06d}" for n in range(123456, 999999, 7919) if f"{n:06d}" not in near)


def verify(page: Page, code: str, status: int) -> None:
    """Type a code on /login/verify, expecting the answer's status."""
    expect(page).to_have_url(re.compile(r"/login/verify(\?|$)"))
    page.get_by_label("Code").fill(code)
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/api/" not in r.url
    ) as answer:
        page.get_by_role("button", name="Sign in", exact=True).click()
    assert answer.value.status == status


def refused(page: Page) -> None:
    """The verify page again, with the code's field error and the alert."""
    expect(page).to_have_url(re.compile(r"/login/verify$"))
    expect(page.get_by_role("alert")).to_have_text(WRONG_CODE)
    expect(page.get_by_label("Code")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#code-error")).to_have_text(WRONG_CODE)
    expect(page.get_by_role("navigation")).to_contain_text("Sign in")  # still nobody


def signed_in(page: Page, name: str, path: str) -> None:
    expect(page).to_have_url(re.compile(rf"{re.escape(path)}$"))
    expect(page.locator(".flash-success")).to_have_text(f"Welcome, {name}!")
    expect(page.get_by_role("navigation")).to_contain_text(f"Signed in as {name}")


def test_enrol_then_sign_in_with_the_app_where_next_said(
    new_context: ContextFactory, mail: MailServer, server: Server
) -> None:
    page = new_context(java_script_enabled=False).new_page()
    email = unique_email("totp")
    register(page, email, "Tom")
    page.goto("/account")
    expect(page.locator(".two-step")).to_contain_text("Off.")
    open_two_step(page)
    secret = set_it_up(page, email)
    enrolled_with = pyotp.TOTP(secret).now()
    confirm(page, enrolled_with)
    saved_them(page, 10)
    inbox(page, mail, email, "Two-step sign-in was turned on")
    log_out(page)

    page.goto("/protected")
    expect(page).to_have_url(re.compile(r"/login\?next=/protected$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(re.compile(r"/login/verify\?next=/protected$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Two-step sign-in")
    expect(page.get_by_role("main")).to_contain_text("authenticator app")
    expect(page.get_by_role("navigation")).to_contain_text("Sign in")  # not signed in yet

    verify(page, not_a_code(secret), 401)
    refused(page)
    verify(page, enrolled_with, 401)  # used up (or too old by now): never twice
    refused(page)
    verify(page, next_code(secret), 303)
    signed_in(page, "Tom", "/protected")
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome to the protected area, Tom")


def test_a_recovery_code_signs_in_once(new_context: ContextFactory, server: Server) -> None:
    page = new_context(java_script_enabled=False).new_page()
    email = unique_email("recover")
    register(page, email, "Rae")
    _, codes = enrol(page, email)
    log_out(page)

    sign_in(page, email)
    typed = codes[0].upper().replace("-", " ")  # as people copy them: case and dashes ignored
    verify(page, typed, 303)
    signed_in(page, "Rae", "/")
    page.goto("/account")
    expect(page.locator(".two-step")).to_contain_text("9 recovery codes left")
    log_out(page)

    sign_in(page, email)
    verify(page, codes[0], 401)
    refused(page)
    verify(page, codes[1], 303)
    signed_in(page, "Rae", "/")

    open_two_step(page, "Manage two-step sign-in")
    expect(page.get_by_role("main")).to_contain_text("8 recovery codes left")
    press(page, "Make new recovery codes")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your recovery codes")
    fresh = page.locator(".codes code").all_inner_texts()
    assert len(fresh) == 10 and not set(fresh) & set(codes)
    saved_them(page, 10)
    log_out(page)

    sign_in(page, email)
    verify(page, codes[2], 401)  # the old ones died with the new ones
    refused(page)
    verify(page, fresh[0], 303)
    signed_in(page, "Rae", "/")


def test_remember_me_carries_over_the_second_step(
    new_context: ContextFactory, server: Server
) -> None:
    context = new_context(java_script_enabled=False)
    page = context.new_page()
    email = unique_email("remember")
    register(page, email, "Rem")
    secret, _ = enrol(page, email)
    log_out(page)

    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    remember = page.get_by_label(re.compile(r"^Remember me on this device for \d+ days$"))
    remember.check()
    days = int(re.findall(r"\d+", page.locator("label[for=remember]").inner_text())[0])
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(re.compile(r"/login/verify\?next=/$"))
    pending = {c["name"]: c for c in context.cookies()}["session"]
    assert pending["expires"] == -1  # waiting for the code: a browser-session cookie

    verify(page, next_code(secret), 303)
    signed_in(page, "Rem", "/")
    cookie = {c["name"]: c for c in context.cookies()}["session"]
    assert cookie["value"] != pending["value"]  # rotated on signing in
    assert cookie["expires"] > 0
    assert cookie["expires"] == pytest.approx(time.time() + days * 86400, abs=120)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.goto("/account")
    expect(page.locator("tr.current")).to_contain_text("remembered")


def test_turning_it_on_and_off_asks_for_the_password_again(
    new_context: ContextFactory, mail: MailServer, server: Server
) -> None:
    """Both changes go through the password prompt once the proof ran out, and carry on.
    Two people at once, so one wait runs out both proofs."""
    turning_on = new_context(java_script_enabled=False).new_page()
    turning_off = new_context(java_script_enabled=False).new_page()
    email_on, email_off = unique_email("sudo-on"), unique_email("sudo-off")
    register(turning_on, email_on, "Sue")
    register(turning_off, email_off, "Otto")
    enrol(turning_off, email_off)
    turning_on.wait_for_timeout(REAUTH * 1000 + 100)  # signing up, turning it on: proofs gone

    assert open_two_step(turning_on)  # asked, then carried on to the page
    secret = set_it_up(turning_on, email_on)
    confirm(turning_on, pyotp.TOTP(secret).now())
    saved_them(turning_on, 10)
    inbox(turning_on, mail, email_on, "Two-step sign-in was turned on")

    page = turning_off
    assert open_two_step(page, "Manage two-step sign-in")
    press(page, "Turn two-step sign-in off")
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(page.locator(".flash-info")).to_have_text(
        "Two-step sign-in is off. Other sessions were signed out."
    )
    expect(page.locator(".two-step")).to_contain_text("Off.")
    expect(page.get_by_role("link", name="Turn on two-step sign-in")).to_be_visible()
    inbox(page, mail, email_off, "Two-step sign-in was turned off")
    log_out(page)
    sign_in(page, email_off)
    signed_in(page, "Otto", "/")  # the password alone again


def test_two_step_pages_look_right(
    new_context: ContextFactory, server: Server, axe: str | None
) -> None:
    """Every page of two-step sign-in, off and on, with and without an error, light and dark
    (the pages with a code to type also 390 px wide): shot, audited, never scrolling sideways."""
    page = new_context().new_page()
    problems: dict[str, list[str]] = {}

    def check(name: str, phone: bool = False) -> None:
        expect(page.locator("h1")).to_have_count(1)
        sizes = [("desktop", DESKTOP), ("phone", PHONE)] if phone else [("desktop", DESKTOP)]
        for size, viewport in sizes:
            page.set_viewport_size(ViewportSize(width=viewport["width"], height=viewport["height"]))
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                screenshot(page, f"two-step-{name}-{size}-{scheme}")
                found = audit(page, axe)
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                if overflow > 0:
                    found.append(f"scrolls sideways by {overflow}px")
                if found:
                    problems[f"{name}-{size}-{scheme}"] = found
        page.set_viewport_size(ViewportSize(width=DESKTOP["width"], height=DESKTOP["height"]))

    email = unique_email("gallery")
    register(page, email, "Ada Lovelace")
    open_two_step(page)
    check("manage-off")
    secret = set_it_up(page, email)
    check("setup", phone=True)
    page.emulate_media(color_scheme="dark")
    qr = page.get_by_role("img", name="QR code for your authenticator app")
    assert qr.evaluate("(img) => getComputedStyle(img).backgroundColor") == "rgb(255, 255, 255)"
    key = page.locator(".secret")
    key.click()  # one click takes the whole key, to paste into the app
    assert page.evaluate("() => getSelection().toString()").strip() == key.inner_text()
    page.get_by_label("Code").fill(not_a_code(secret))
    page.get_by_role("button", name="Turn it on").click()
    expect(page.locator("#code-error")).to_have_text(WRONG_CODE)
    check("setup-wrong-code", phone=True)
    confirm(page, pyotp.TOTP(secret).now())
    check("recovery-codes")
    saved_them(page, 10)
    check("account-on")
    page.get_by_role("link", name="Manage two-step sign-in").click()
    check("manage-on")
    log_out(page)
    sign_in(page, email)
    expect(page).to_have_url(re.compile(r"/login/verify"))
    check("verify", phone=True)
    page.get_by_label("Code").fill(not_a_code(secret))
    page.get_by_role("button", name="Sign in", exact=True).click()
    refused(page)
    check("verify-wrong-code", phone=True)
    assert problems == {}
