"""What a person does in the browser with mail in the loop: a server that mails to a real
SMTP server, reading the inbox, signing up, in and out. Shared by the browser tests of
§11 and §12."""

from __future__ import annotations

import re
import time
from contextlib import AbstractContextManager
from email.message import EmailMessage
from pathlib import Path

from playwright.sync_api import Page, expect
from servers import Server, free_port, running
from smtp import MailServer, links

from browser.browserkit import GENEROUS, PASSWORD


def mailing_server(
    tmp: Path, mail: MailServer, workers: int = 2, host: str = "127.0.0.1", **config: str
) -> AbstractContextManager[Server]:
    """Hypercorn whose links point at itself (as `host`: passkeys need a name, not an
    address) and whose mail goes to `mail`."""
    port = free_port()
    env = {
        "QUART_DATABASE": str(tmp / "app.sqlite3"),
        **GENEROUS,
        "QUART_MAIL_URL": mail.url,
        "QUART_MAIL_POLL_INTERVAL": "0.05",
        "QUART_PUBLIC_URL": f"http://{host}:{port}",
        "QUART_THROTTLE_MAIL_PER_EMAIL": "100",
        "QUART_THROTTLE_MAIL_PER_ADDRESS": "1000",
        **{f"QUART_{key}": value for key, value in config.items()},
    }
    return running(tmp, env, workers, port=port)


def inbox(
    page: Page, mail: MailServer, address: str, subject: str, count: int = 1
) -> list[EmailMessage]:
    """The messages to `address` with `subject`, once at least `count` have arrived."""
    deadline = time.monotonic() + 10
    while True:
        found = [m for m in mail.to(address) if m["Subject"] == subject]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, (
            f"{len(found)} of {count} {subject!r} mail(s) to {address} within 10 s"
        )
        page.wait_for_timeout(50)


def link_in(message: EmailMessage, server: Server, path: str) -> str:
    """The one link of the message, which must lead to PUBLIC_URL + path + a token."""
    found = links(message)
    assert len(found) == 1, found
    assert re.fullmatch(rf"{re.escape(server.url + path)}[A-Za-z0-9_-]{{32,}}", found[0])
    return found[0]


def register(page: Page, email: str, name: str) -> None:
    """Sign up (which signs in) through the registration page."""
    page.goto("/register")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Name (optional)").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Welcome, {name}!")


def sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def log_out(page: Page) -> None:
    page.get_by_role("navigation").get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
