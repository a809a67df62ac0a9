"""Mail delivery and rendering (SPEC §11) against a real SMTP server on loopback, no mocks."""

# The fixtures imported from tests/smtp.py are requested by parameters of the same name.
# ruff: noqa: F811

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from smtp import Certificate, MailServer, certificate, links, mail_server  # noqa: F401

from quart_auth_app import create_app
from quart_auth_app.cli_mail import register_mail_commands
from quart_auth_app.mail import (
    SUBJECTS,
    FileTransport,
    MailError,
    SMTPTransport,
    build_message,
    transport_from_config,
)
from quart_auth_app.mail.messages import NEEDS

PUBLIC_URL = "https://auth.example.com"
SENDER = "quart_auth_app <no-reply@auth.example.com>"
ADA = "ada@example.com"
FORGOT = f"{PUBLIC_URL}/password/forgot"
RESET = f"{PUBLIC_URL}/password/reset/{'R' * 43}"

# Each kind's context, and the links its text part must carry (the link, or the way back in).
KINDS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "verify_email": (
        {"link": f"{PUBLIC_URL}/email/verify/V1", "hours": 24},
        [f"{PUBLIC_URL}/email/verify/V1"],
    ),
    "password_reset": ({"link": RESET, "minutes": 60}, [RESET]),
    "email_change": (
        {"link": f"{PUBLIC_URL}/email/change/C1", "hours": 1, "new_email": "new@example.com"},
        [f"{PUBLIC_URL}/email/change/C1"],
    ),
    "password_changed": ({"how": "reset"}, [FORGOT]),
    "email_changed": ({"old_email": ADA, "new_email": "new@example.com"}, []),
    "account_deleted": ({}, []),
    "totp_enabled": ({}, [FORGOT]),
    "totp_disabled": ({}, [FORGOT]),
    "passkey_added": ({"passkey_name": "YubiKey 5"}, [FORGOT]),
    "test": ({}, []),
}


@pytest.fixture
def mail_app(tmp_path: Path) -> Quart:
    """An app that is created, never served: rendering needs only its app context."""
    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test secret",
            "DATABASE": str(tmp_path / "db.sqlite3"),
            "BCRYPT_ROUNDS": 4,
            "PUBLIC_URL": PUBLIC_URL + "/",
            "MAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
        }
    )


async def render(
    app: Quart, kind: str = "password_reset", to: str = ADA, **extra: Any
) -> EmailMessage:
    async with app.app_context():
        return await build_message(kind, to, {"name": "Ada", **KINDS[kind][0], **extra}, SENDER)


def tls_server(mode: str, certificate: Certificate, **options: Any) -> MailServer:
    context = certificate.server_context() if mode != "plain" else None
    return MailServer(mode, context, **options)


# Rendering


def test_every_kind_has_a_subject_needs_and_both_templates() -> None:
    templates = Path(__file__).resolve().parent.parent / "templates" / "mail"
    assert SUBJECTS.keys() == NEEDS.keys() == KINDS.keys()
    for kind in SUBJECTS:
        assert (templates / f"{kind}.txt").is_file() and (templates / f"{kind}.html").is_file()


@pytest.mark.parametrize("kind", list(KINDS))
async def test_build_message_renders_each_kind(mail_app: Quart, kind: str) -> None:
    message = await render(mail_app, kind, name="<script>alert(1)</script>")
    assert message["Subject"] == SUBJECTS[kind]
    assert message["From"] == SENDER and message["To"] == ADA
    assert message["Date"] and message["Message-ID"].endswith("@auth.example.com>")
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None and message.is_multipart()
    assert message.get_content_type() == "multipart/alternative"
    assert links(message) == KINDS[kind][1]
    html_text = html.get_content()
    assert "<script>" not in html_text
    if kind != "test":  # the test message greets nobody by name
        assert "Hello <script>alert(1)</script>," in text.get_content()
        assert "Hello &lt;script&gt;alert(1)&lt;/script&gt;," in html_text
    for link in KINDS[kind][1]:  # every link is in the HTML too, as text to copy
        assert f">{link}</a>" in html_text
    assert "http://" not in html_text and "src=" not in html_text  # nothing to fetch


async def test_messages_say_what_happened(mail_app: Quart) -> None:
    reset = (await render(mail_app, "password_reset")).get_body(("plain",))
    assert reset is not None
    assert "works once, for 60 minutes" in reset.get_content()
    assert "If you did not ask, ignore" in reset.get_content()
    changed = (await render(mail_app, "password_changed", how="changed")).get_body(("plain",))
    assert changed is not None and "was changed." in changed.get_content()
    one_hour = (await render(mail_app, "email_change")).get_body(("plain",))
    assert one_hour is not None and "for 1 hour." in one_hour.get_content()


async def test_unknown_kind_or_missing_context_is_a_key_error(mail_app: Quart) -> None:
    async with mail_app.app_context():
        with pytest.raises(KeyError):
            await build_message("newsletter", ADA, {}, SENDER)
        with pytest.raises(KeyError, match="link"):
            await build_message("password_reset", ADA, {"minutes": 60}, SENDER)


async def test_a_recipient_cannot_add_headers(mail_app: Quart) -> None:
    with pytest.raises(ValueError):
        await render(mail_app, to="ada@example.com\r\nBcc: eve@example.com")


# SMTP


async def test_smtp_delivers_the_message(mail_app: Quart, mail_server: MailServer) -> None:
    transport = transport_from_config({"MAIL_URL": mail_server.url}, "/nonexistent")
    assert isinstance(transport, SMTPTransport)
    await transport.send(await render(mail_app))
    (received,) = await mail_server.wait_for(1)
    assert mail_server.to("ADA@example.com") == [received]
    assert received["Subject"] == "Reset your password"
    assert received["From"] == SENDER and received["To"] == ADA
    assert links(received) == [RESET]
    html = received.get_body(("html",))
    assert html is not None and f'href="{RESET}"' in html.get_content()


@pytest.mark.parametrize("mode", ["plain", "starttls", "implicit"])
async def test_each_tls_mode_delivers_with_the_ca_file(
    mail_app: Quart, certificate: Certificate, mode: str
) -> None:
    with tls_server(mode, certificate) as server:
        config = {"MAIL_URL": server.url, "MAIL_CA_FILE": str(certificate.cert)}
        await transport_from_config(config, "/nonexistent").send(await render(mail_app))
        (received,) = await server.wait_for(1)
        assert links(received) == [RESET]


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_an_unverified_certificate_is_refused(
    mail_app: Quart, certificate: Certificate, mode: str
) -> None:
    with tls_server(mode, certificate) as server:
        with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED"):
            await SMTPTransport(server.url).send(await render(mail_app))
        assert server.messages == []


async def test_starttls_is_required_not_hoped_for(mail_app: Quart, mail_server: MailServer) -> None:
    url = mail_server.url.replace("smtp://", "smtp+starttls://")
    with pytest.raises(MailError, match="STARTTLS"):
        await SMTPTransport(url).send(await render(mail_app))
    assert mail_server.messages == []


async def test_credentials_from_the_url_are_percent_decoded(
    mail_app: Quart, certificate: Certificate
) -> None:
    with tls_server("starttls", certificate, login=("mailer@example.com", "p@ss:w/rd%")) as server:
        base = server.url.replace("smtp+starttls://", "")
        wrong = SMTPTransport(
            f"smtp+starttls://mailer%40example.com:guess-w0rd@{base}", ca_file=str(certificate.cert)
        )
        with pytest.raises(MailError) as refused:
            await wrong.send(await render(mail_app))
        assert "guess-w0rd" not in str(refused.value) and "guess-w0rd" not in wrong.describe()
        right = SMTPTransport(
            f"smtp+starttls://mailer%40example.com:p%40ss%3Aw%2Frd%25@{base}",
            ca_file=str(certificate.cert),
        )
        await right.send(await render(mail_app))
        assert len(await server.wait_for(1)) == 1


async def test_a_stopped_server_fails_fast_and_a_restarted_one_delivers(
    mail_app: Quart, mail_server: MailServer
) -> None:
    transport = SMTPTransport(mail_server.url, timeout=5)
    message = await render(mail_app)
    mail_server.stop()
    start = time.monotonic()
    with pytest.raises(MailError, match=re.escape(mail_server.url)):
        await transport.send(message)
    assert time.monotonic() - start < 5
    mail_server.start()  # the same port again: an outbox retry would now succeed
    await transport.send(message)
    assert len(await mail_server.wait_for(1)) == 1


async def test_a_silent_server_times_out(mail_app: Quart) -> None:
    message = await render(mail_app)
    with socket.socket() as listener:  # accepts connections (the backlog), never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        transport = SMTPTransport(f"smtp://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        start = time.monotonic()
        with pytest.raises(MailError, match=re.escape("smtp://127.0.0.1:")):
            await transport.send(message)
        assert 0.4 < time.monotonic() - start < 3


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("smtp://mail.example.com", "smtp://mail.example.com:25"),
        ("SMTP+STARTTLS://user:secret@mail.example.com", "smtp+starttls://mail.example.com:587"),
        ("smtps://user:secret@mail.example.com", "smtps://mail.example.com:465"),
        ("smtps://mail.example.com:2465", "smtps://mail.example.com:2465"),
        ("smtp://[::1]:2525", "smtp://[::1]:2525"),
    ],
)
def test_url_ports_and_description(url: str, described: str) -> None:
    assert SMTPTransport(url).describe() == described


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://mail.example.com", "unknown scheme 'http'"),
        ("mail.example.com:25", "unknown scheme"),
        ("smtp://user:secret@", "no host"),
        ("smtp://", "no host"),
        ("smtp://user:se/cret@mail.example.com", "not a number"),  # an unencoded '/'
    ],
)
def test_a_malformed_url_is_a_clear_value_error(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as refused:
        transport_from_config({"MAIL_URL": url}, "/nonexistent")
    assert "secret" not in str(refused.value) and "cret" not in str(refused.value)


def test_a_missing_ca_file_is_a_clear_value_error(tmp_path: Path) -> None:
    config = {"MAIL_URL": "smtps://mail.example.com", "MAIL_CA_FILE": str(tmp_path / "none.pem")}
    with pytest.raises(ValueError, match="MAIL_CA_FILE"):
        transport_from_config(config, "/nonexistent")


# The embedded default


async def test_file_transport_writes_a_private_eml_and_logs_its_links(
    mail_app: Quart, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport = transport_from_config({"MAIL_URL": ""}, str(tmp_path / "instance"))
    assert isinstance(transport, FileTransport)
    assert transport.describe() == f"file://{tmp_path / 'instance' / 'outbox'}"
    sent = await render(mail_app)
    with caplog.at_level(logging.INFO, logger="quart_auth_app.mail"):
        await transport.send(sent)
        await transport.send(await render(mail_app, "account_deleted"))
    folder = tmp_path / "instance" / "outbox"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]  # no temporary file left behind
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    parsed = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Message-ID"] == sent["Message-ID"] and links(parsed) == [RESET]
    logged = [r.getMessage() for r in caplog.records if r.name == "quart_auth_app.mail"]
    assert logged == [
        f"mail to {ADA}: Reset your password\n{RESET}",
        f"mail to {ADA}: Your account was deleted",
    ]


async def test_file_transport_uses_mail_outbox_dir_and_reports_failure(
    mail_app: Quart, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    transport = transport_from_config({"MAIL_OUTBOX_DIR": str(blocker / "outbox")}, "/nonexistent")
    with pytest.raises(MailError, match="a-file"):
        await transport.send(await render(mail_app))


# The send-test-mail command (synchronous tests: the command runs its own event loop)


def invoke(app: Quart, *args: str) -> Any:
    register_mail_commands(app)
    return app.test_cli_runner().invoke(args=list(args))


def test_send_test_mail_delivers(mail_app: Quart, mail_server: MailServer) -> None:
    mail_app.config.update(MAIL_URL=mail_server.url, MAIL_FROM=SENDER)
    result = invoke(mail_app, "send-test-mail", " Ada@Example.com ")
    assert result.exit_code == 0, result.output
    assert result.output == f"Sent a test message to {ADA} via {mail_server.url}.\n"
    (received,) = mail_server.messages
    assert received["Subject"] == "Test message from quart_auth_app"
    assert received["To"] == ADA and received["From"] == SENDER


def test_send_test_mail_without_mail_url_writes_the_eml(mail_app: Quart) -> None:
    result = invoke(mail_app, "send-test-mail", ADA)
    assert result.exit_code == 0, result.output
    folder = mail_app.config["MAIL_OUTBOX_DIR"]
    assert f"via file://{folder}." in result.output
    assert len(os.listdir(folder)) == 1


def test_send_test_mail_reports_a_stopped_server(mail_app: Quart, mail_server: MailServer) -> None:
    mail_app.config["MAIL_URL"] = mail_server.url
    mail_server.stop()
    result = invoke(mail_app, "send-test-mail", ADA)
    assert result.exit_code == 1
    assert f"Could not send: {mail_server.url}: " in result.output


def test_send_test_mail_reports_a_bad_mail_url(mail_app: Quart) -> None:
    mail_app.config["MAIL_URL"] = "imap://user:secret@mail.example.com"
    result = invoke(mail_app, "send-test-mail", ADA)
    assert result.exit_code == 1
    assert "Could not send: MAIL_URL: unknown scheme 'imap'" in result.output
    assert "secret" not in result.output


def test_send_test_mail_refuses_an_invalid_address(
    mail_app: Quart, mail_server: MailServer
) -> None:
    mail_app.config["MAIL_URL"] = mail_server.url
    result = invoke(mail_app, "send-test-mail", "not-an-address")
    assert result.exit_code == 2
    assert "Invalid value for ADDRESS: Please enter a valid email address." in result.output
    assert mail_server.messages == []
