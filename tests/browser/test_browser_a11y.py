"""Every page at desktop and phone size, light and dark: screenshots and accessibility checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from browser.browserkit import DESKTOP, PASSWORD, PHONE, ContextFactory, screenshot, unique_email

pytestmark = pytest.mark.browser

# axe-core rules this project must pass on every page, besides everything else axe reports.
REQUIRED_RULES = [
    "label",
    "color-contrast",
    "page-has-heading-one",
    "document-title",
    "html-has-lang",
]

# Contrast and labelling computed from the page itself, used when axe-core cannot be fetched.
OWN_CHECKS = """
() => {
  const problems = [];
  const h1 = document.querySelectorAll("h1");
  if (h1.length !== 1) problems.push(`${h1.length} h1 elements`);
  for (const input of document.querySelectorAll("input:not([type=hidden]):not([hidden])")) {
    if (!input.labels || input.labels.length === 0) problems.push(`unlabelled input ${input.name}`);
  }
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 4).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el.checkVisibility() || el.closest(".visually-hidden")) continue;
    const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)} for "${node.textContent.trim()}"`);
  }
  return problems;
}
"""


def audit(page: Page, axe: str | None) -> list[str]:
    """Accessibility problems on the open page: axe-core's violations, or our own checks."""
    if axe is None:
        return list(page.evaluate(OWN_CHECKS))
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # Evaluated through DevTools, so the page's CSP (script-src 'self') stays in force.
        page.evaluate(axe)
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    ran = {
        rule["id"]
        for key in ("violations", "passes", "incomplete", "inapplicable")
        for rule in result.get(key, [])
    }
    missing = [rule for rule in REQUIRED_RULES if rule not in ran]
    problems = [f"axe did not run {rule}" for rule in missing]
    for violation in result["violations"]:
        targets = [", ".join(map(str, node["target"])) for node in violation["nodes"]]
        problems.append(f"{violation['id']}: {violation['help']} at {targets}")
    return problems


def signed_in_page(page: Page) -> None:
    """Register a fresh user, which signs them in and lands on the welcome page."""
    email = unique_email("gallery")
    page.goto("/register")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Name (optional)").fill("Ada Lovelace")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, Ada Lovelace!")


def wrong_password(page: Page) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill("nobody@example.com")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_be_visible()


def weak_registration(page: Page) -> None:
    page.goto("/register")
    page.get_by_label("Email").fill("taken-or-not@example.com")
    page.get_by_label("Name (optional)").fill("Wes")
    page.get_by_label("Password").fill("password1")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".field-error")).to_be_visible()


def landing_with_switch_open(page: Page) -> None:
    page.goto("/")
    page.get_by_text("New here? Create an account").click()


def forgot_sent(page: Page) -> None:
    page.goto("/password/forgot")
    page.get_by_label("Email").fill("nobody@example.com")
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("status")).to_be_visible()


def go(path: str) -> Callable[[Page], None]:
    def open_page(page: Page) -> None:
        page.goto(path)

    return open_page


ANONYMOUS: list[tuple[str, Callable[[Page], None]]] = [
    ("landing", go("/")),
    ("landing-register-open", landing_with_switch_open),
    ("login", go("/login?next=/protected")),
    ("login-wrong-password", wrong_password),
    ("register", go("/register")),
    ("register-errors", weak_registration),
    ("logout-anonymous", go("/logout")),
    ("error-404", go("/no-such-page")),
    ("forgot", go("/password/forgot")),
    ("forgot-sent", forgot_sent),
    ("link-invalid", go("/password/reset")),  # no reset link followed: 400
    ("confirm-verify", go("/email/verify/" + "x" * 43)),  # the GET shows the button only
    ("confirm-change", go("/email/change/" + "x" * 43)),
]
SIGNED_IN: list[tuple[str, Callable[[Page], None]]] = [
    ("welcome", lambda page: None),  # the page registration lands on, with its flash
    ("protected", go("/protected")),
    ("account", go("/account")),
    ("check-email", go("/email/unverified")),  # the new user has not verified yet
    ("reauthenticate", go("/reauthenticate?next=/account/delete")),
    ("change-email", go("/account/email")),
    ("delete-account", go("/account/delete")),
    ("logout", go("/logout")),
    ("error-405", go("/account/password")),
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("size", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_every_page_looks_right_and_is_accessible(
    new_context: ContextFactory, axe: str | None, size: str, viewport: dict[str, int], scheme: str
) -> None:
    mobile = {"is_mobile": True, "has_touch": True} if size == "phone" else {}
    page = new_context(viewport=viewport, color_scheme=scheme, **mobile).new_page()
    problems: dict[str, list[str]] = {}

    def visit(name: str, open_page: Callable[[Page], None]) -> None:
        open_page(page)
        expect(page.locator("h1")).to_have_count(1)
        screenshot(page, f"{name}-{size}-{scheme}")
        found = audit(page, axe)
        if found:
            problems[name] = found
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            problems.setdefault(name, []).append(f"scrolls sideways by {overflow}px")

    for name, open_page in ANONYMOUS:
        visit(name, open_page)
    signed_in_page(page)
    for name, open_page in SIGNED_IN:
        visit(name, open_page)

    assert problems == {}


def test_dark_mode_changes_the_colours(new_context: ContextFactory) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        page = new_context(color_scheme=scheme).new_page()
        page.goto("/login")
        colours[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert colours["light"] != colours["dark"]
    assert re.fullmatch(r"rgb\(\d+, \d+, \d+\)", colours["dark"])


def test_focus_is_visible(page: Page) -> None:
    page.goto("/register")  # no autofocus here, so the first Tab reaches the skip link
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    expect(page.get_by_role("link", name="Skip to content")).to_be_in_viewport()
    page.get_by_label("Email").focus()
    page.keyboard.press("Tab")
    name = page.get_by_label("Name (optional)")
    expect(name).to_be_focused()
    style, width = name.evaluate(
        "(el) => { const s = getComputedStyle(el); return [s.outlineStyle, s.outlineWidth]; }"
    )
    assert style == "solid" and width == "3px"
