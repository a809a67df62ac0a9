"""Configuration defaults (SPEC §2) and the secret kept in the instance folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "DATABASE": None,  # None: instance/quart_auth_app.sqlite3
    "DATABASE_URL": None,  # postgresql://... switches to PostgreSQL (SPEC §9)
    "DATABASE_POOL_SIZE": 10,
    "DATABASE_WAIT": 0,  # seconds a request waits for a PostgreSQL that refuses (restarting)
    "BCRYPT_ROUNDS": 12,
    "BCRYPT_THREADS": os.cpu_count() or 1,
    "SESSION_IDLE_TIMEOUT": 7200,
    "SESSION_LIFETIME": 86400,
    "REMEMBER_LIFETIME": 2592000,
    "SESSION_COOKIE_NAME": "session",
    "SESSION_COOKIE_SECURE": False,
    "SESSION_PURGE_INTERVAL": 300,
    "THROTTLE_ENABLED": True,
    "THROTTLE_ACCOUNT_FAILURES": 5,
    "THROTTLE_ADDRESS_FAILURES": 100,
    "THROTTLE_SIGNUPS_PER_ADDRESS": 20,
    "THROTTLE_WINDOW": 900,
    "THROTTLE_IN_FLIGHT_WAIT": 1.0,  # seconds a full key's newest attempts may still be running
    "THROTTLE_SESSION_WRITES": 30,  # revocations one session may make per window
    "THROTTLE_DEVICE_FAILURES": 10,  # failed sign-ins from one known browser (device cookie)
    "DEVICE_COOKIE_NAME": "device",
    "DEVICE_COOKIE_LIFETIME": 31536000,  # a year: the browser stays known to the account
    "EVENT_RETENTION": 31536000,  # seconds security events are kept
    "EVENTS_PER_USER": 1000,  # and at most this many per user, the newest (the purge trims)
    "MAX_SESSIONS_PER_USER": 100,  # past this, a sign-in ends the least recently used one
    "SESSION_MAX_FLASHES": 10,  # unread flash messages kept per session, newest first
    "SESSION_MAX_BYTES": 4096,  # session data size; the oldest flashes go past it
    "TRUSTED_PROXY_HOPS": 0,  # how many reverse proxies set X-Forwarded-For
    "MAX_CONTENT_LENGTH": 65536,
    "MAX_FORM_PARTS": 32,  # fields per form body (413 past it); Quart's default is 1,000
    "MAX_FORM_MEMORY_SIZE": 16384,  # bytes per multipart field (413 past it)
    "PASSWORD_MIN_LENGTH": 8,
    "PASSWORD_MAX_LENGTH": 1024,
    "PASSWORD_MIN_SCORE": 2,  # zxcvbn score 0-4
    "EVENTS_SHOWN": 20,
    "PAGE_SIZE": 20,  # sessions per page of /account
    # Mail and the account's life (SPEC §11)
    "PUBLIC_URL": "http://localhost:5000",  # links in mail and the passkeys RP ID: never Host
    "MAIL_URL": None,  # smtp://, smtp+starttls:// or smtps://[user:pass@]host[:port]
    "MAIL_FROM": "quart_auth_app <no-reply@localhost>",
    "MAIL_OUTBOX_DIR": None,  # without MAIL_URL: .eml files here (None: instance/outbox)
    "MAIL_TIMEOUT": 10,  # seconds for one SMTP delivery
    "MAIL_CA_FILE": None,  # PEM bundle to trust for the SMTP server's TLS certificate
    "MAIL_POLL_INTERVAL": 5.0,  # seconds between looks at the outbox (new mail wakes it too)
    "MAIL_RETRY_DELAY": 30.0,  # first retry after this, doubling each time (at most an hour)
    "MAIL_MAX_ATTEMPTS": 8,  # then the message is given up and the failure logged
    "MAIL_LEASE": 120.0,  # seconds a sender holds a claimed message before others may retry
    "MAIL_RETENTION": 604800,  # seconds sent or given-up messages stay in the outbox
    "RESET_LINK_LIFETIME": 3600,
    "VERIFY_LINK_LIFETIME": 172800,
    "EMAIL_CHANGE_LINK_LIFETIME": 86400,
    "REQUIRE_VERIFIED_EMAIL": False,  # unverified accounts see only "check your email"
    "REAUTH_WINDOW": 900,  # seconds after a password was typed that sensitive pages open
    "THROTTLE_MAIL_PER_EMAIL": 5,  # reset and verification mails to one address per window
    "THROTTLE_MAIL_PER_ADDRESS": 30,  # such requests from one client network per window
    "LOG_FORMAT": "text",  # or "json": one JSON object a line, Hypercorn's logs too (SPEC §13)
    "METRICS_TOKEN": None,  # /metrics for other than loopback clients: Authorization: Bearer
}


def load_secret(instance_path: str, name: str = "secret_key") -> str:
    """Read the instance secret, creating it (mode 0600) on first start.

    Several workers may start at once: the secret is written to a private
    temporary file and linked into place, so exactly one value wins and nobody
    reads a half-written file.
    """
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
