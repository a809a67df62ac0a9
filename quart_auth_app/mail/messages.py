"""Mail messages (SPEC §11): plain text plus HTML from templates/mail/, with constant subjects."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any

from quart import current_app

APP_NAME = "quart_auth_app"
DEFAULT_SENDER = "quart_auth_app <no-reply@localhost>"

# Constant subjects: the recipient is the only header a caller's value reaches, and
# EmailMessage refuses CR or LF in it.
SUBJECTS: dict[str, str] = {
    "verify_email": "Confirm your email address",
    "password_reset": "Reset your password",
    "email_change": "Confirm your new email address",
    "password_changed": "Your password was changed",
    "email_changed": "Your email address was changed",
    "account_deleted": "Your account was deleted",
    "totp_enabled": "Two-step sign-in was turned on",
    "totp_disabled": "Two-step sign-in was turned off",
    "passkey_added": "A passkey was added to your account",
    "test": f"Test message from {APP_NAME}",
}

# What each kind's templates need besides name, app_name and public_url. Jinja renders a
# missing value as nothing, so a reset mail without its link is refused here instead.
NEEDS: dict[str, tuple[str, ...]] = {
    "verify_email": ("link", "hours"),
    "password_reset": ("link", "minutes"),
    "email_change": ("link", "hours", "new_email"),
    "password_changed": ("how",),
    "email_changed": ("old_email", "new_email"),
    "account_deleted": (),
    "totp_enabled": (),
    "totp_disabled": (),
    "passkey_added": ("passkey_name",),
    "test": (),
}


def _domain(sender: str) -> str:
    """The sender's domain, for Message-ID (never the host's FQDN: looking it up can hang)."""
    return parseaddr(sender)[1].rpartition("@")[2] or "localhost"


async def render(kind: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """The text and HTML bodies of a `kind` message.

    Rendered with the app's Jinja environment but without its context processors: a mail
    is built outside any request (by the background sender), where they have no session
    to read, and no mail should depend on who is signed in.
    """
    env = current_app.jinja_env
    text = await env.get_template(f"mail/{kind}.txt").render_async(context)
    html = await env.get_template(f"mail/{kind}.html").render_async(context)
    return text, html


async def build_message(
    kind: str, recipient: str, context: Mapping[str, Any], sender: str
) -> EmailMessage:
    """The `kind` message to `recipient` (call inside an app context; KeyError: unknown kind).

    `context` gives what NEEDS lists for the kind, and may give `name` and `public_url`
    (PUBLIC_URL by default).
    """
    subject = SUBJECTS[kind]
    missing = [key for key in NEEDS[kind] if key not in context]
    if missing:
        raise KeyError(f"a {kind} message needs {', '.join(missing)}")
    values: dict[str, Any] = {
        "name": "",
        "app_name": APP_NAME,
        "public_url": current_app.config.get("PUBLIC_URL") or "",
        **context,
        "recipient": recipient,
        "subject": subject,
    }
    values["public_url"] = str(values["public_url"]).rstrip("/")
    text, html = await render(kind, values)

    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = formatdate(usegmt=True)
    # Not make_msgid, nor the generator's own MIME boundary: both draw from the `random`
    # module, whose shared state the background sender would move under everyone else using
    # it in the process (hypothesis, in the test suite, notices).
    message["Message-ID"] = f"<{secrets.token_hex(16)}@{_domain(sender)}>"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    message.set_boundary(f"=={secrets.token_hex(16)}==")
    return message
