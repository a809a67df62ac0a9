"""Mail delivery (SPEC §11): SMTP when MAIL_URL is set, else .eml files in the instance folder.

Every delivery failure comes out as MailError, so the outbox's sender retries one exception
type, and no message (nor the log) ever carries the relay's password.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

log = logging.getLogger("quart_auth_app.mail")

DEFAULT_TIMEOUT = 10.0
# scheme: (default port, implicit TLS, STARTTLS required). Plain smtp:// never upgrades on its
# own: an opportunistic STARTTLS against a relay with an unverifiable certificate would fail
# a set-up that asked for no TLS at all.
SCHEMES: dict[str, tuple[int, bool, bool]] = {
    "smtp": (25, False, False),
    "smtp+starttls": (587, False, True),
    "smtps": (465, True, False),
}
LINK = re.compile(r"https?://[^\s<>\"']+")


class MailError(Exception):
    """A message could not be delivered; the text says why (never with a credential)."""


class Transport(Protocol):
    """Where messages go: an SMTP relay, or a folder of .eml files."""

    async def send(self, message: EmailMessage) -> None:
        """Deliver `message`, or raise MailError."""

    def describe(self) -> str:
        """Where messages go, for logs and the CLI (never a password)."""


def text_links(message: EmailMessage) -> list[str]:
    """The http(s) links in the message's plain-text part, in order."""
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return []
    return [link.rstrip(".,;:!?)") for link in LINK.findall(part.get_content())]


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying context: the system's CAs, or only MAIL_CA_FILE's (a self-hosted relay)."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"MAIL_CA_FILE: cannot load {ca_file}: {exc}") from None


class SMTPTransport:
    """Delivery through a relay named by a URL: smtp://, smtp+starttls:// or smtps://."""

    def __init__(
        self, url: str, timeout: float = DEFAULT_TIMEOUT, ca_file: str | None = None
    ) -> None:
        # The messages below name the part that is wrong, never the URL: it may hold a password.
        parts = urlsplit(url)
        self.scheme = parts.scheme.lower()
        if self.scheme not in SCHEMES:
            raise ValueError(
                f"MAIL_URL: unknown scheme {self.scheme!r} "
                "(use smtp://, smtp+starttls:// or smtps://)"
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError(
                "MAIL_URL: the port is not a number "
                "(percent-encode any '/', '@' or ':' in the user name and password)"
            ) from None
        if not parts.hostname:
            raise ValueError("MAIL_URL: no host (for example smtp+starttls://mail.example.com)")
        if timeout <= 0:
            raise ValueError("MAIL_TIMEOUT must be a positive number of seconds")
        default_port, self._implicit_tls, self._starttls = SCHEMES[self.scheme]
        self.host = parts.hostname
        self.port = port or default_port
        self.timeout = timeout
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password or "") if self._username else None
        uses_tls = self._implicit_tls or self._starttls
        self._tls = _tls_context(ca_file) if uses_tls else None

    def describe(self) -> str:
        """The relay's scheme, host and port (no user name, no password)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    async def send(self, message: EmailMessage) -> None:
        """Deliver `message` within MAIL_TIMEOUT in all, or raise MailError."""
        try:
            # aiosmtplib's timeout is per step; the whole delivery gets the same bound, so a
            # relay that answers slowly at every step cannot hold the sender for minutes.
            async with asyncio.timeout(self.timeout):
                await aiosmtplib.send(
                    message,
                    hostname=self.host,
                    port=self.port,
                    username=self._username,
                    password=self._password,
                    use_tls=self._implicit_tls,
                    start_tls=self._starttls,
                    tls_context=self._tls,
                    timeout=self.timeout,
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {self.timeout:g} s"
            raise MailError(f"{self.describe()}: {reason}") from exc


class FileTransport:
    """The embedded default: each message an .eml file, its links logged for the developer."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def describe(self) -> str:
        """The folder the .eml files go to."""
        return f"file://{self.folder.absolute()}"

    async def send(self, message: EmailMessage) -> None:
        """Write `message` to a new .eml file (off the event loop), then log its links."""
        try:
            await asyncio.to_thread(self._write, message)
        except OSError as exc:
            raise MailError(f"{self.describe()}: {exc}") from exc
        # The only place a link is logged (SPEC §11): the developer's way to follow it.
        links = "".join(f"\n{link}" for link in text_links(message))
        log.info("mail to %s: %s%s", message["To"], message["Subject"], links)

    def _write(self, message: EmailMessage) -> Path:
        """Write to a private temporary name, then rename: a reader never sees half a file."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.folder / f"{stamp}-{secrets.token_hex(6)}.eml"
        tmp = self.folder / f".{path.name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(fd, "wb") as handle:
                handle.write(message.as_bytes())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path


def transport_from_config(config: Mapping[str, Any], instance_path: str) -> Transport:
    """SMTPTransport when MAIL_URL is set (ValueError if it is malformed), else FileTransport."""
    url = config.get("MAIL_URL")
    if url:
        timeout = config.get("MAIL_TIMEOUT")
        return SMTPTransport(
            str(url),
            timeout=DEFAULT_TIMEOUT if timeout is None else float(timeout),
            ca_file=config.get("MAIL_CA_FILE") or None,
        )
    return FileTransport(config.get("MAIL_OUTBOX_DIR") or os.path.join(instance_path, "outbox"))
