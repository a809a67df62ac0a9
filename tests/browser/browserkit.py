"""Helpers for the browser tests: Chromium flags, page watching, screenshots, axe-core."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page
from servers import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
AXE_CACHE = Path.home() / ".cache" / "quart_auth_app" / "axe"
PASSWORD = "plum orbit velvet 42"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Loose limits for the shared server; the throttling test starts its own strict one.
GENEROUS = {
    "QUART_THROTTLE_ACCOUNT_FAILURES": "1000",
    "QUART_THROTTLE_ADDRESS_FAILURES": "10000",
    "QUART_THROTTLE_SIGNUPS_PER_ADDRESS": "10000",
}
# Reported by the page itself, so CSP violations show up even when Chromium words them differently.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`Content Security Policy violation: ${e.violatedDirective} ${e.blockedURI}`);
});
"""
FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")


@dataclass
class Watch:
    """Problems seen on any page of the contexts a test opened."""

    problems: list[str] = field(default_factory=list)
    # Documents answered with an error status on purpose (401 on a wrong password, 404 pages):
    # Chromium logs those as "Failed to load resource", which is not a page defect.
    error_documents: set[str] = field(default_factory=set)

    def attach(self, page: Page) -> None:
        page.on("console", lambda message: self._console(page, message))
        page.on("pageerror", lambda error: self.problems.append(f"{page.url}: uncaught {error}"))
        page.on("response", self._response)

    def _response(self, response: Any) -> None:
        if response.request.is_navigation_request() and response.status >= 400:
            self.error_documents.add(response.url)

    def _console(self, page: Page, message: Any) -> None:
        text = message.text
        if message.type != "error" and "Content Security Policy" not in text:
            return
        if FAILED_LOAD.search(text) and message.location.get("url") in self.error_documents:
            return
        self.problems.append(f"{page.url}: console {message.type}: {text}")


def unique_email(tag: str = "user") -> str:
    """A fresh address, so tests sharing one server never collide."""
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def screenshot(page: Page, name: str) -> Path:
    """Save the page as test-artifacts/screenshots/NAME.png (git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_source() -> str | None:
    """axe-core's browser bundle from the npm registry, cached outside git; None when offline."""
    cached = sorted(AXE_CACHE.glob("axe-core-*/axe.min.js"))
    if cached:
        return cached[-1].read_text()
    npm = shutil.which("npm")
    if npm is None:
        return None
    AXE_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run(
                [npm, "pack", "axe-core", "--silent", "--pack-destination", tmp],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
        except (subprocess.SubprocessError, OSError):
            return None
        tarball = Path(tmp) / done.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/axe.min.js")
            if member is None:
                return None
            source = member.read().decode()
    target = AXE_CACHE / tarball.name.removesuffix(".tgz") / "axe.min.js"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source)
    return source


ContextFactory = Callable[..., BrowserContext]


def open_contexts(browser: Browser, base_url: str) -> tuple[ContextFactory, Watch, list[Any]]:
    """A context factory whose pages are all watched, the watch, and the contexts opened."""
    watch = Watch()
    opened: list[BrowserContext] = []

    def new_context(**options: Any) -> BrowserContext:
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(base_url=base_url, **options)
        context.set_default_timeout(15_000)
        context.add_init_script(CSP_LISTENER)
        context.on("page", watch.attach)
        opened.append(context)
        return context

    return new_context, watch, opened
