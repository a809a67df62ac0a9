"""The mail outbox's durability (SPEC §11): queued with its cause, retried, given up, claimed
once across senders, recovered after a dead sender's lease or a SIGKILL, purged when old.

Real parts only: aiosmtpd on loopback, SQLite files, PostgreSQL, the real Hypercorn.
"""

# The fixtures imported from tests/smtp.py are requested by parameters of the same name.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

import pytest
from dbrows import rows
from quart import Quart
from servers import client, running, start
from smtp import MailServer, links, mail_server  # noqa: F401

from quart_auth_app import create_app
from quart_auth_app.config import DEFAULTS
from quart_auth_app.purge import purge_expired
from quart_auth_app.services import services
from quart_auth_app.store import Outgoing, open_store

PUBLIC_URL = "https://auth.example.test"
PASSWORD = "plum-orbit-canyon-42"
ADA = "ada@example.com"
BOB = "bob@example.com"
SETTLE = 0.4  # seconds a duplicate, or a further attempt, would have had to show up


def mail_config(db_config: Mapping[str, Any], smtp: MailServer, **overrides: Any) -> dict[str, Any]:
    """conftest's test configuration, delivering to `smtp` quickly."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test secret",
        "BCRYPT_ROUNDS": 4,
        "THROTTLE_IN_FLIGHT_WAIT": 0,
        **db_config,
        "PUBLIC_URL": PUBLIC_URL,
        "MAIL_URL": smtp.url,
        "MAIL_TIMEOUT": 5,
        "MAIL_POLL_INTERVAL": 0.05,
        "MAIL_RETRY_DELAY": 0.05,
        **overrides,
    }


@asynccontextmanager
async def serving(config: Mapping[str, Any]) -> AsyncIterator[Quart]:
    """An app as a process serves it: store open, its sender running."""
    app = create_app(config)
    async with app.test_app():
        yield app


class Row(NamedTuple):
    recipient: str
    kind: str
    user_id: int | None
    attempts: int
    sent_at: float | None
    failed_at: float | None
    last_error: str | None


def outbox(config: Mapping[str, Any]) -> list[Row]:
    """Every row of the outbox, by id, read as another process would."""
    where = cast(Quart, SimpleNamespace(config=config))  # dbrows reads only the config
    found = rows(
        where,
        """SELECT recipient, kind, user_id, attempts, sent_at, failed_at, last_error
           FROM mail_outbox ORDER BY id""",
    )
    return [Row(*row) for row in found]


async def until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


def received(smtp: MailServer) -> Counter[str]:
    """How many messages each address received."""
    return Counter(a.addr_spec for m in list(smtp.messages) for a in m["To"].addresses)


async def test_signup_while_smtp_is_down_is_delivered_once_it_is_back(
    db_config: dict[str, Any], mail_server: MailServer
) -> None:
    mail_server.stop()
    config = mail_config(db_config, mail_server, MAIL_MAX_ATTEMPTS=30)
    async with serving(config) as app:
        http = app.test_client()
        response = await http.post("/api/register", json={"email": ADA, "password": PASSWORD})
        assert response.status_code == 201

        await until(lambda: outbox(config)[0].attempts >= 2, "two failed attempts")
        [row] = outbox(config)
        assert (row.kind, row.sent_at, row.failed_at) == ("verify_email", None, None)
        assert row.last_error  # why the last attempt failed (connection refused)

        mail_server.start()
        [message] = await mail_server.wait_for(1)
        await asyncio.sleep(SETTLE)
        assert received(mail_server) == {ADA: 1}
        assert outbox(config)[0].sent_at is not None  # marked sent

        assert all(link.startswith(f"{PUBLIC_URL}/") for link in links(message))
        [link] = [link for link in links(message) if "/email/verify/" in link]
        assert link.startswith(f"{PUBLIC_URL}/email/verify/")
        # The link made at delivery works: its token's hash was stored then.
        token = link.removeprefix(f"{PUBLIC_URL}/email/verify/")
        response = await http.post("/api/email/verify", json={"token": token})
        assert response.status_code == 204
        assert (await (await http.get("/api/me")).get_json())["email_verified"] is True


async def test_mail_is_given_up_after_max_attempts_and_logged(
    db_config: dict[str, Any], mail_server: MailServer, caplog: pytest.LogCaptureFixture
) -> None:
    mail_server.stop()
    caplog.set_level(logging.WARNING, logger="quart_auth_app.mail")
    config = mail_config(db_config, mail_server, MAIL_MAX_ATTEMPTS=2)
    async with serving(config) as app:
        await services(app).store.insert_mail(Outgoing("test", BOB), None, time.time())
        services(app).mailer.wake()
        await until(lambda: outbox(config)[0].failed_at is not None, "the mail given up")
        given_up = outbox(config)
        [row] = given_up
        assert (row.attempts, row.sent_at) == (2, None)
        assert row.failed_at is not None
        assert row.last_error and row.last_error.strip()
        errors = [
            r
            for r in caplog.records
            if r.name == "quart_auth_app.mail" and r.levelno == logging.ERROR
        ]
        assert len(errors) == 1, errors

        # Given up means given up: the server coming back changes nothing.
        mail_server.start()
        await asyncio.sleep(SETTLE)
        assert mail_server.messages == []
        assert outbox(config) == given_up
        assert await services(app).store.count_mail_due() == 0


async def test_mail_is_queued_in_the_transaction_of_its_cause(
    db_config: dict[str, Any], mail_server: MailServer
) -> None:
    config = mail_config(db_config, mail_server)
    async with serving(config) as app:
        first = await app.test_client().post(
            "/api/register", json={"email": ADA, "password": PASSWORD}
        )
        assert first.status_code == 201
        again = await app.test_client().post(
            "/api/register", json={"email": ADA, "password": PASSWORD}
        )
        assert again.status_code == 200  # a retried sign-up signs in (issue #16): no new mail
        ada_id = (await first.get_json())["id"]
        assert [row[:3] for row in outbox(config)] == [(ADA, "verify_email", ada_id)]

        # The unique index deciding (two sign-ups racing for one email): no user, no mail.
        store = services(app).store
        verify = Outgoing("verify_email", ADA)
        assert await store.insert_user(ADA, "Ada", "x", time.time(), verify) is None
        # A mail that cannot be queued undoes its cause.
        unqueueable = Outgoing("verify_email", BOB, {"not json": object()})
        with pytest.raises(TypeError):
            await store.insert_user(BOB, "Bob", "x", time.time(), unqueueable)
        assert await store.select_user_by_email(BOB) is None
        assert len(outbox(config)) == 1

        await mail_server.wait_for(1)
        await asyncio.sleep(SETTLE)
        assert received(mail_server) == {ADA: 1}


async def test_two_senders_on_one_database_deliver_each_message_once(
    db_config: dict[str, Any], mail_server: MailServer
) -> None:
    count = 40
    # Senders that only look when woken, so both start on the whole queue at once.
    config = mail_config(db_config, mail_server, MAIL_POLL_INTERVAL=60)
    one_from, two_from = "one@example.test", "two@example.test"
    async with (
        serving({**config, "MAIL_FROM": one_from}) as one,
        serving({**config, "MAIL_FROM": two_from}) as two,
    ):
        recipients = [f"r{i}@example.test" for i in range(count)]
        now = time.time()
        store = services(one).store
        await asyncio.gather(
            *(store.insert_mail(Outgoing("test", r), None, now) for r in recipients)
        )
        services(one).mailer.wake()
        services(two).mailer.wake()
        await mail_server.wait_for(count, timeout=30)
        await asyncio.sleep(SETTLE)

        assert received(mail_server) == dict.fromkeys(recipients, 1)
        assert len(mail_server.messages) == count
        # Each row claimed once (an attempt counts per claim), and both senders took part.
        assert {row.attempts for row in outbox(config)} == {1}
        assert all(row.sent_at is not None for row in outbox(config))
        senders = Counter(m["From"].addresses[0].addr_spec for m in mail_server.messages)
        assert set(senders) == {one_from, two_from}, senders


async def test_concurrent_claims_from_two_stores_never_share_a_row(
    db_config: dict[str, Any], mail_server: MailServer
) -> None:
    """The claim statement itself, raced hard: many claims at once from two processes' stores
    (the senders above race only at their first round, a window too small to rely on)."""
    count, batch = 200, 5
    config = {**DEFAULTS, **mail_config(db_config, mail_server)}
    stores = [open_store(config), open_store(config)]
    for store in stores:
        await store.open()
    try:
        now = time.time()
        for i in range(count):
            await stores[0].insert_mail(Outgoing("test", f"r{i}@example.test"), None, now)
        claims = [stores[i % 2].claim_mail(now + 1, 60, batch) for i in range(count // batch)]
        claimed = [mail.id for found in await asyncio.gather(*claims) for mail in found]
    finally:
        for store in stores:
            await store.close()
    assert len(claimed) == len(set(claimed)), Counter(claimed).most_common(3)
    assert {row.attempts for row in outbox(config)} == {1}


async def test_claim_of_a_dead_sender_is_delivered_after_its_lease(
    db_config: dict[str, Any], mail_server: MailServer
) -> None:
    lease = 1.0
    config = mail_config(db_config, mail_server, MAIL_LEASE=lease)
    recipients = [f"r{i}@example.test" for i in range(5)]
    dead = open_store({**DEFAULTS, **config})  # a process that claims, then dies
    await dead.open()
    try:
        for address in recipients:
            await dead.insert_mail(Outgoing("test", address), None, time.time())
        claimed_at = time.time()
        claimed = await dead.claim_mail(claimed_at, lease, 10)
        assert sorted(mail.recipient for mail in claimed) == sorted(recipients)
    finally:
        await dead.close()

    async with serving(config) as app:
        # Within the lease, another sender leaves the claimed mail alone...
        await asyncio.sleep(max(0.0, claimed_at + 0.7 * lease - time.time()))
        assert time.time() < claimed_at + lease, "too slow to look within the lease"
        assert mail_server.messages == []
        # ...and delivers it once the lease has run out.
        await mail_server.wait_for(len(recipients))
        await asyncio.sleep(SETTLE)
        assert received(mail_server) == dict.fromkeys(recipients, 1)
        assert {row.attempts for row in outbox(config)} == {2}  # the dead claim, then the delivery
        assert all(row.sent_at is not None for row in outbox(config))
        assert await services(app).store.count_mail_due() == 0


@pytest.mark.integration
@pytest.mark.slow
async def test_mail_queued_before_a_sigkill_is_delivered_once_after_restart(
    tmp_path: Path,
) -> None:
    database = {"DATABASE": str(tmp_path / "app.sqlite3")}
    smtp = MailServer()  # down until after the kill
    env = {
        "QUART_DATABASE": database["DATABASE"],
        "QUART_SECRET_KEY": "outbox test secret",
        "QUART_THROTTLE_ENABLED": "false",
        "QUART_PUBLIC_URL": PUBLIC_URL,
        "QUART_MAIL_URL": smtp.url,
        "QUART_MAIL_TIMEOUT": "5",
        "QUART_MAIL_POLL_INTERVAL": "0.1",
        "QUART_MAIL_RETRY_DELAY": "0.2",
        "QUART_MAIL_MAX_ATTEMPTS": "50",
        "QUART_MAIL_LEASE": "2",  # a claim the kill cut short is retried this soon
    }
    recipients = [f"user{i}@example.com" for i in range(5)]

    server = start(tmp_path, env)
    try:
        async with client(server, timeout=15) as http:
            for address in recipients:
                response = await http.post(
                    "/api/register", json={"email": address, "password": PASSWORD}
                )
                assert response.status_code == 201, response.text
        # Every mail tried and failed at least once: queued, not delivered, not given up.
        await until(
            lambda: (
                all(row.attempts >= 1 for row in outbox(database))
                and len(outbox(database)) == len(recipients)
            ),
            "every mail attempted",
        )
    finally:
        server.kill()  # SIGKILL to the process group we started: parent and workers
    assert all(row.sent_at is None and row.failed_at is None for row in outbox(database))

    smtp.start()
    try:
        with running(tmp_path, env) as again:
            await smtp.wait_for(len(recipients), timeout=30)
            await until(
                lambda: all(row.sent_at is not None for row in outbox(database)), "all marked sent"
            )
            await asyncio.sleep(SETTLE)
            assert received(smtp) == dict.fromkeys(recipients, 1)
            assert len(smtp.messages) == len(recipients)
            for message in smtp.messages:
                [link] = [link for link in links(message) if "/email/verify/" in link]
                assert link.startswith(f"{PUBLIC_URL}/email/verify/")
            assert "Traceback" not in again.log_text()
    finally:
        smtp.stop()


async def test_purge_deletes_old_sent_mail_and_keeps_due_mail(
    db_config: dict[str, Any], mail_server: MailServer
) -> None:
    retention = 3600
    config = {**DEFAULTS, **mail_config(db_config, mail_server, MAIL_RETENTION=retention)}
    store = open_store(config)  # no sender: the rows stay as the test leaves them
    await store.open()
    try:
        now = time.time()
        old = now - retention - 60
        for address, created in [
            ("old-sent@example.test", old),
            ("old-failed@example.test", old),
            ("old-retrying@example.test", old),
            ("new-sent@example.test", now),
        ]:
            await store.insert_mail(Outgoing("test", address), None, created)
        ids = {mail.recipient: mail.id for mail in await store.claim_mail(now, 60, 10)}
        assert len(ids) == 4
        await store.insert_mail(Outgoing("test", "old-queued@example.test"), None, old)
        await store.mark_mail_sent(ids["old-sent@example.test"], now)
        await store.give_up_mail(ids["old-failed@example.test"], "refused", now)
        await store.retry_mail(ids["old-retrying@example.test"], "refused", now + 60)
        await store.mark_mail_sent(ids["new-sent@example.test"], now)

        await purge_expired(config, store)
    finally:
        await store.close()
    assert [row.recipient for row in outbox(config)] == [
        "old-retrying@example.test",
        "new-sent@example.test",
        "old-queued@example.test",
    ]
