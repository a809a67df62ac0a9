"""Passkeys (SPEC §12) in a real Chromium, with its virtual authenticator (the DevTools
`WebAuthn` domain), against the real Hypercorn.

WebAuthn needs a secure context and a domain as RP ID: the server's PUBLIC_URL is
http://localhost:PORT and the pages are opened there (localhost is a secure context; the
server listens on 127.0.0.1, which localhost reaches).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from servers import Server
from smtp import MailServer

from browser.accounts import inbox, log_out, mailing_server, register, sign_in
from browser.browserkit import (
    PASSWORD,
    ContextFactory,
    open_contexts,
    screenshot,
    unique_email,
)

pytestmark = pytest.mark.browser

ADDED = "A passkey was added to your account"
SOON = 5_000  # ms: a bound for what should happen at once (the options' timeout is minutes)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mail: MailServer) -> Iterator[Server]:
    """Hypercorn (two workers) whose relying party is http://localhost:PORT."""
    tmp = tmp_path_factory.mktemp("browser-passkeys")
    with mailing_server(tmp, mail, host="localhost") as started:
        yield started


@pytest.fixture
def new_context(browser: Browser, server: Server) -> Iterator[ContextFactory]:
    """Watched contexts on http://localhost:PORT; any console or CSP problem fails the test."""
    factory, watch, opened = open_contexts(browser, f"http://localhost:{server.port}")
    yield factory
    for context in opened:
        context.close()
    assert watch.problems == []


def authenticator(context: BrowserContext, page: Page) -> tuple[Any, str]:
    """A platform authenticator for the page: resident keys, user verification (passing).

    With presence simulated it answers every request at once, autofill (conditional) ones
    included: a /login page then signs in by itself. `present` switches that.
    """
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


# Marks the page once passkeys.js has asked for a passkey in the email field's autofill.
MARK_AUTOFILL = """
const get = navigator.credentials.get.bind(navigator.credentials);
navigator.credentials.get = (options) => {
  if (options && options.mediation === "conditional") window.autofillWaiting = true;
  return get(options);
};
"""


def present(cdp: Any, authenticator_id: str, enabled: bool) -> None:
    cdp.send(
        "WebAuthn.setAutomaticPresenceSimulation",
        {"authenticatorId": authenticator_id, "enabled": enabled},
    )


def test_add_a_passkey_sign_out_and_sign_in_with_it(
    new_context: ContextFactory, server: Server, mail: MailServer
) -> None:
    context = new_context()
    page = context.new_page()
    cdp, authenticator_id = authenticator(context, page)
    email = unique_email("passkey")
    register(page, email, "Pat")

    page.goto("/account")
    expect(page.get_by_role("heading", name="Passkeys")).to_be_visible()
    expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()
    expect(page.get_by_text("Adding a passkey needs JavaScript")).to_be_hidden()
    page.get_by_label("Name for a new passkey (optional)").fill("Test laptop")
    with page.expect_navigation():  # the page reloads once the passkey is stored
        page.get_by_role("button", name="Add a passkey").click()
    expect(page.get_by_label("Passkey name")).to_have_value("Test laptop")
    expect(page.locator("#passkeys ~ ul")).to_contain_text("not used yet")
    screenshot(page, "passkey-added")

    [credential] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})[
        "credentials"
    ]
    assert credential["isResidentCredential"] is True and credential["rpId"] == "localhost"
    [notice] = inbox(page, mail, email, ADDED)
    body = notice.get_body(preferencelist=("plain",))
    assert body is not None and '"Test laptop"' in body.get_content()

    present(cdp, authenticator_id, False)  # the autofill request made on /login waits
    page.add_init_script(MARK_AUTOFILL)
    log_out(page)
    expect(page.get_by_label("Email")).to_have_attribute("autocomplete", "username webauthn")
    # Only once the autofill request is waiting may the authenticator answer: a request
    # made after this (its options fetched late) would be answered at once, sign in and
    # leave the page before the button is used (seen once in eight CI runs).
    page.wait_for_function("window.autofillWaiting === true")
    present(cdp, authenticator_id, True)
    # the button aborts the waiting autofill request and asks with fresh options
    with page.expect_request(re.compile(r"/api/passkeys/login/options$")):
        page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(f"http://localhost:{server.port}/")
    expect(page.get_by_role("navigation")).to_contain_text("Signed in as Pat")

    page.goto("/account")
    expect(page.locator("#passkeys ~ ul")).to_contain_text("last used")
    count = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})[
        "credentials"
    ][0]["signCount"]
    assert count >= 1

    # removal from the page: the password was typed at sign-up, within REAUTH_WINDOW
    page.get_by_role("button", name="Remove Test laptop").click()
    expect(page.locator(".flash-success")).to_have_text(
        "The passkey was removed. Other sessions were signed out."
    )
    expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()


def test_the_email_fields_autofill_signs_in_and_goes_to_next(
    new_context: ContextFactory, server: Server
) -> None:
    context = new_context()
    page = context.new_page()
    cdp, authenticator_id = authenticator(context, page)
    register(page, unique_email("next"), "Nia")
    page.goto("/account")
    with page.expect_navigation():
        page.get_by_role("button", name="Add a passkey").click()
    expect(page.get_by_label("Passkey name")).to_have_value("Passkey 1")
    present(cdp, authenticator_id, False)
    log_out(page)
    page.goto("/protected")  # sends the visitor to /login?next=/protected
    expect(page).to_have_url(re.compile(r"/login\?next=/protected$"))
    present(cdp, authenticator_id, True)
    # Chromium's virtual authenticator picks the passkey the email field's autofill offers
    # (conditional mediation) as soon as the page asks: nothing is clicked
    page.reload()
    expect(page).to_have_url(f"http://localhost:{server.port}/protected")
    expect(page.get_by_role("navigation")).to_contain_text("Signed in as Nia")


def credentials(cdp: Any, authenticator_id: str) -> list[dict[str, Any]]:
    return list(
        cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})["credentials"]
    )


def add_passkey(page: Page, name: str) -> None:
    """On /account (signed in, within REAUTH_WINDOW): add a passkey named `name`."""
    page.goto("/account")
    page.get_by_label("Name for a new passkey (optional)").fill(name)
    with page.expect_navigation():  # the page reloads once the passkey is stored
        page.get_by_role("button", name="Add a passkey").click()
    expect(page.get_by_label("Passkey name").last).to_have_value(name)


# With the authenticator present, the email field's autofill (conditional) request signs in by
# itself as soon as /login opens; with presence off until just before the click, turning it on
# lets that waiting request go on too, racing the button (it now and then won). So the button
# is pressed on a page opened as in a browser without passkey autofill, where only it asks.
NO_AUTOFILL = "PublicKeyCredential.isConditionalMediationAvailable = async () => false;"


def passkey_button(page: Page, cdp: Any, authenticator_id: str) -> None:
    """Open /login (in a browser without passkey autofill), make the authenticator present
    and press "Sign in with a passkey": the button's request is the page's only one."""
    page.add_init_script(NO_AUTOFILL)
    options = re.compile(r"/api/passkeys/login/options$")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if options.search(r.url) else None)
    page.goto("/login")  # ends the request a previous /login may have left waiting
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
    assert asked == []
    present(cdp, authenticator_id, True)
    with page.expect_request(options):
        page.get_by_role("button", name="Sign in with a passkey").click()


def test_sign_in_on_a_second_device_fails_until_that_one_is_registered(
    new_context: ContextFactory, server: Server
) -> None:
    home = f"http://localhost:{server.port}/"
    # device A: signs up and adds a passkey
    context_a = new_context()
    page_a = context_a.new_page()
    cdp_a, id_a = authenticator(context_a, page_a)
    email = unique_email("devices")
    register(page_a, email, "Dev")
    add_passkey(page_a, "Laptop")
    [laptop] = credentials(cdp_a, id_a)
    present(cdp_a, id_a, False)  # the autofill request made on /login waits
    log_out(page_a)

    # device B: its own, empty authenticator has no passkey for the site
    context_b = new_context()
    page_b = context_b.new_page()
    cdp_b, id_b = authenticator(context_b, page_b)
    tried: list[str] = []
    page_b.on(
        "request",
        lambda r: tried.append(r.url) if r.url.endswith("/api/passkeys/login") else None,
    )
    page_b.goto("/login")
    page_b.get_by_role("button", name="Sign in with a passkey").click()
    # the authenticator refuses at once (no matching credential): get() rejects, no wait for
    # the options' timeout, and the page says so instead of signing in
    expect(page_b.get_by_role("status")).to_have_text("No passkey was used.", timeout=SOON)
    expect(page_b.get_by_role("button", name="Sign in with a passkey")).to_be_enabled(timeout=SOON)
    expect(page_b).to_have_url(re.compile(r"/login$"))
    expect(page_b.get_by_role("navigation")).not_to_contain_text("Signed in as")
    assert tried == []  # nothing was sent to sign in with
    assert context_b.request.get("/api/me").status == 401
    assert credentials(cdp_b, id_b) == []

    # B signs in with the password (a fresh proof), adds its own passkey, signs out
    sign_in(page_b, email, PASSWORD)
    expect(page_b.get_by_role("navigation")).to_contain_text("Signed in as Dev")
    add_passkey(page_b, "Phone")
    expect(page_b.get_by_label("Passkey name")).to_have_count(2)
    [phone] = credentials(cdp_b, id_b)
    assert phone["credentialId"] != laptop["credentialId"] and phone["rpId"] == "localhost"
    present(cdp_b, id_b, False)  # or the autofill request on /login signs in by itself
    log_out(page_b)
    assert context_b.request.get("/api/me").status == 401

    # now the passkey button signs B in
    passkey_button(page_b, cdp_b, id_b)
    expect(page_b).to_have_url(home)
    expect(page_b.get_by_role("navigation")).to_contain_text("Signed in as Dev")
    me = context_b.request.get("/api/me")
    assert me.status == 200 and me.json()["email"] == email
    assert credentials(cdp_b, id_b)[0]["signCount"] >= 1

    # and A's passkey still signs A in, on A
    passkey_button(page_a, cdp_a, id_a)
    expect(page_a).to_have_url(home)
    expect(page_a.get_by_role("navigation")).to_contain_text("Signed in as Dev")
    assert context_a.request.get("/api/me").status == 200
    assert credentials(cdp_a, id_a)[0]["signCount"] > laptop["signCount"]
    page_a.goto("/account")
    expect(page_a.locator("#passkeys ~ ul")).not_to_contain_text("not used yet")


def test_without_javascript_the_passkey_buttons_stay_hidden(new_context: ContextFactory) -> None:
    page = new_context(java_script_enabled=False).new_page()
    page.goto("/login")
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    register(page, unique_email("nojs"), "Noel")
    page.goto("/account")
    expect(page.get_by_role("heading", name="Passkeys")).to_be_visible()
    expect(page.get_by_role("button", name="Add a passkey")).to_be_hidden()
    expect(page.get_by_text("Adding a passkey needs JavaScript")).to_be_visible()
