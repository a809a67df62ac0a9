"""Real Chromium (Debian's, through Playwright) against the real Hypercorn with hypercorn.toml.

Every page a test opens is watched: a console error, an uncaught exception or a
Content-Security-Policy violation fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from servers import Server, running
from smtp import MailServer

from browser.browserkit import (
    CHROMIUM,
    CHROMIUM_ARGS,
    GENEROUS,
    ContextFactory,
    axe_source,
    open_contexts,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without Debian's Chromium the browser tests skip, saying why (CI turns skips into failures)."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup --test as root)"
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """One headless Chromium; each test gets fresh contexts (a fresh profile each)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def mail() -> Iterator[MailServer]:
    """A real SMTP server on loopback, one per test module (see accounts.mailing_server)."""
    with MailServer() as smtp:
        yield smtp


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app as users run it, on a temporary database with loose throttling."""
    tmp = tmp_path_factory.mktemp("browser-server")
    env = {"QUART_DATABASE": str(tmp / "app.sqlite3"), **GENEROUS}
    with running(tmp, env) as started:
        yield started


@pytest.fixture
def new_context(browser: Browser, server: Server) -> Iterator[ContextFactory]:
    """Open watched browser contexts on the shared server; fail on any console/CSP problem."""
    factory, watch, opened = open_contexts(browser, server.url)
    yield factory
    for context in opened:
        context.close()
    assert watch.problems == []


@pytest.fixture
def page(new_context: ContextFactory) -> Page:
    """A watched desktop page in a fresh context."""
    return new_context().new_page()


@pytest.fixture(scope="session")
def axe() -> str | None:
    return axe_source()
