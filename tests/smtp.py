"""A real SMTP server on loopback (aiosmtpd) for the suite: plain, STARTTLS or implicit TLS.

aiosmtpd's Controller runs its own loop in a thread; its loop is closed when it stops, so
every `start()` builds a new Controller, on the same port as the first.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from servers import free_port

HOST = "127.0.0.1"
LINK = re.compile(r"https?://[^\s<>\"']+")


def links(message: EmailMessage) -> list[str]:
    """The http(s) URLs in the message's text/plain part, in order."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the message has no text/plain part"
    return LINK.findall(part.get_content())


class _Collect:
    """The aiosmtpd handler: every accepted message, parsed, appended to a shared list."""

    def __init__(self, messages: list[EmailMessage]) -> None:
        self.messages = messages

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)  # list.append is atomic: the test's thread may read
        return "250 Message accepted for delivery"


class MailServer:
    """An SMTP server on 127.0.0.1 that keeps what it receives; stop() refuses connections."""

    def __init__(
        self,
        tls: str = "plain",
        context: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        if tls not in ("plain", "starttls", "implicit"):
            raise ValueError(f"unknown TLS mode {tls!r}")
        if tls != "plain" and context is None:
            raise ValueError(f"{tls} needs a server SSL context")
        self.tls = tls
        self.context = context
        self.login = login  # when set, AUTH with exactly this user and password is required
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        scheme = {"plain": "smtp", "starttls": "smtp+starttls", "implicit": "smtps"}[self.tls]
        return f"{scheme}://{HOST}:{self.port}"

    def start(self) -> None:
        """Listen (again) on `port`."""
        assert self._controller is None, "already running"
        options: dict[str, Any] = {}
        if self.tls == "implicit":
            options["ssl_context"] = self.context
        elif self.tls == "starttls":
            options.update(tls_context=self.context, require_starttls=True)
        if self.login is not None:
            options.update(authenticator=self._authenticate, auth_required=True)
        controller = Controller(
            _Collect(self.messages),
            hostname=HOST,
            port=self.port,
            server_hostname="localhost",  # the default, getfqdn(), may wait on DNS
            ready_timeout=30,  # the machine may be busy with the rest of the suite
            **options,
        )
        controller.start()
        self._controller = controller

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.login == (
            data.login.decode(),
            data.password.decode(),
        )
        return AuthResult(success=ok, handled=False)

    def stop(self) -> None:
        """Close the listener: connections to `port` are refused until `start()`."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def wait_for(self, count: int, timeout: float = 10) -> list[EmailMessage]:
        """The first `count` messages, once that many have arrived (AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.messages)} of {count} message(s) arrived within {timeout} s"
            )
            await asyncio.sleep(0.02)
        return self.messages[:count]

    def to(self, address: str) -> list[EmailMessage]:
        """The messages received so far whose To header names `address`."""
        wanted = address.lower()
        return [
            m
            for m in list(self.messages)
            if any(a.addr_spec.lower() == wanted for a in m["To"].addresses)
        ]


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost: the CA file is the certificate."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificate(folder: Path) -> Certificate:
    """Generate a short-lived EC certificate with the openssl command line."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return Certificate(cert, key)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """One self-signed certificate for the session's TLS servers."""
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    """A plain SMTP server on loopback, started, stopped after the test."""
    with MailServer() as server:
        yield server
