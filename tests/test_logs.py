"""Logs (SPEC §13): `LOG_FORMAT=json` gives one JSON object a line from every logger of a
real server (Hypercorn's error and access logs and the app's own), and no line of a whole
account's life names a password, a session cookie, a link's token, a TOTP secret or code,
or a recovery code."""

# ruff: noqa: F811
from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

import httpx
import pyotp
import pytest
from quart.logging import default_handler
from servers import free_port, start
from smtp import MailServer, links, mail_server  # noqa: F401

from quart_auth_app import create_app
from quart_auth_app.logs import JsonFormatter

PASSWORD = "plum orbit velvet 42"
NEW_PASSWORD = "amber quartz lantern 77"
EMAIL = "logs@example.com"


def test_an_unknown_log_format_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LOG_FORMAT must be one of text, json"):
        create_app({"DATABASE": str(tmp_path / "app.sqlite3"), "LOG_FORMAT": "xml"})


def test_a_json_line_carries_the_record_and_an_access_lines_fields() -> None:
    formatter = JsonFormatter()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        failed = logging.LogRecord(
            "quart_auth_app", logging.ERROR, "x", 1, "it %s", ("failed",), sys.exc_info()
        )
    entry = json.loads(formatter.format(failed))
    assert entry["level"] == "ERROR" and entry["message"] == "it failed"
    assert entry["logger"] == "quart_auth_app" and "RuntimeError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00")
    atoms = {
        "h": "127.0.0.1:5",
        "m": "GET",
        "U": "/password/reset/[token]",
        "s": "303",
        "b": "-",
        "L": "0.002",
    }
    access = logging.LogRecord(
        "hypercorn.access", logging.INFO, "x", 1, "%(h)s %(s)s", (atoms,), None
    )
    entry = json.loads(formatter.format(access))
    assert entry["message"] == "127.0.0.1:5 303"
    assert (entry["method"], entry["path"], entry["status"]) == (
        "GET",
        "/password/reset/[token]",
        303,
    )
    assert entry["seconds"] == 0.002 and "bytes" not in entry


def test_the_apps_own_loggers_write_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    app = create_app({"DATABASE": str(tmp_path / "app.sqlite3"), "LOG_FORMAT": "json"})
    kept = list(app.logger.handlers)
    try:
        logging.getLogger("quart_auth_app.mail.sender").warning("outbox %s", "unavailable")
        entry = json.loads(capfd.readouterr().err.strip().splitlines()[-1])
        assert entry["logger"] == "quart_auth_app.mail.sender" and entry["level"] == "WARNING"
        assert entry["message"] == "outbox unavailable"
    finally:
        app.logger.handlers = [default_handler]  # as every other app of this process has it
    assert len(kept) == 1 and kept[0] is not default_handler  # its own, not Quart's shared one


def _mail(mail: MailServer, subject: str, timeout: float = 10) -> str:
    """The one link of the newest message to EMAIL with `subject`."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in mail.to(EMAIL) if m["Subject"] == subject]
        if found:
            return links(found[-1])[0]
        assert time.monotonic() < deadline, f"no {subject!r} mail within {timeout} s"
        time.sleep(0.05)


def test_a_real_server_logs_json_lines_that_name_no_secret(
    tmp_path: Path, mail_server: MailServer
) -> None:
    port = free_port()
    env = {
        "QUART_DATABASE": str(tmp_path / "app.sqlite3"),
        "QUART_LOG_FORMAT": "json",
        "QUART_MAIL_URL": mail_server.url,
        "QUART_MAIL_POLL_INTERVAL": "0.05",
        "QUART_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    server = start(tmp_path, env, 2, port=port)
    secrets: list[str] = [PASSWORD, NEW_PASSWORD]
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            body = {"email": EMAIL, "password": PASSWORD, "name": "Lou"}
            assert client.post("/api/register", json=body).status_code == 201
            secrets.append(client.cookies["session"])
            wrong = {"email": EMAIL, "password": PASSWORD + "x"}
            assert client.post("/api/login", json=wrong).status_code == 401
            secrets.append(PASSWORD + "x")
            assert client.post("/api/password/forgot", json={"email": EMAIL}).status_code == 202
            link = _mail(mail_server, "Reset your password")
            token = link.rsplit("/", 1)[1]
            secrets.append(token)
            assert client.get(link.replace(f"http://127.0.0.1:{port}", "")).status_code == 303
            reset = {"token": token, "new_password": NEW_PASSWORD}
            assert client.post("/api/password/reset", json=reset).status_code == 204
            signed = client.post("/api/login", json={"email": EMAIL, "password": NEW_PASSWORD})
            assert signed.status_code == 200
            secrets.append(client.cookies["session"])
            proof = client.post("/api/reauthenticate", json={"password": NEW_PASSWORD})
            assert proof.status_code == 204
            secret = client.post("/api/2fa/totp").json()["secret"]
            code = pyotp.TOTP(secret).now()
            confirmed = client.post("/api/2fa/totp/confirm", json={"code": code})
            assert confirmed.status_code == 200
            recovery = confirmed.json()["recovery_codes"]
            secrets += [secret, code, *recovery]
            assert client.post("/api/logout").status_code == 204
            pending = client.post("/api/login", json={"email": EMAIL, "password": NEW_PASSWORD})
            assert pending.json()["second_factor_required"] is True
            finish = client.post("/api/login/second-factor", json={"code": recovery[0]})
            assert finish.status_code == 200
            secrets.append(client.cookies["session"])
            assert client.get("/no/such/page").status_code == 404
    finally:
        server.kill(signal.SIGTERM)
    text = server.log_text()
    lines = [line for line in text.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "pid", "message"} <= set(entries[0])
    loggers = {e["logger"] for e in entries}
    assert {"hypercorn.error", "hypercorn.access"} <= loggers, loggers
    accesses = [e for e in entries if e["logger"] == "hypercorn.access"]
    assert {"client", "method", "path", "status", "seconds"} <= set(accesses[0])
    print(accesses[:3])
    assert any(e["path"] == "/password/reset/[token]" and e["status"] == 303 for e in accesses)
    assert any(e["path"] == "/no/such/page" and e["status"] == 404 for e in accesses)
    leaked = [s for s in secrets if s in text]
    assert not leaked, leaked
