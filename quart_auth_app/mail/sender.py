"""The background sender: one per process, delivering the outbox (SPEC §11).

Each round claims due messages for a lease (one statement, so two workers or two nodes
never take the same row), builds each in an app context, delivers it and marks it sent.
A failed delivery is retried with doubling delays and given up after MAIL_MAX_ATTEMPTS;
a process that dies mid-delivery leaves its claim to expire, and another sender retries.

Links are made here, at delivery: the token is drawn and its hash stored just before the
message goes out, so the outbox never holds a usable token, and a request that queues a
reset costs the same whether or not the address has an account (the sender finds out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from ..clock import now
from ..metrics import mail_failed, store_error
from ..sessions import hash_token
from ..store import Mail, Store, StoreUnavailable
from .messages import build_message
from .transport import MailError, Transport

if TYPE_CHECKING:
    from quart import Quart

log = logging.getLogger("quart_auth_app.mail")

BATCH = 10  # messages claimed per round
MAX_DELAY = 3600.0  # the longest wait between two attempts
TOKEN_BYTES = 32  # 256 bits in each link (SPEC §11 asks for at least 128)
# kind -> (token purpose, link path, lifetime setting)
LINKS = {
    "password_reset": ("reset", "/password/reset/", "RESET_LINK_LIFETIME"),
    "verify_email": ("verify", "/email/verify/", "VERIFY_LINK_LIFETIME"),
    "email_change": ("email", "/email/change/", "EMAIL_CHANGE_LINK_LIFETIME"),
}


class Dropped(Exception):
    """The message has no reason to go out any more (no such account, already verified)."""


class Sender:
    """Delivers the outbox in the background; `wake()` after queueing sends at once."""

    def __init__(self, app: Quart, store: Store, transport: Transport) -> None:
        self.app = app
        self.store = store
        self.transport = transport
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._wake = asyncio.Event()  # bound to the serving loop
        self._stopping = False
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Let the delivery in progress finish (bounded), then end."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        grace = float(self.app.config["MAIL_TIMEOUT"]) + 1
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, grace)

    async def _run(self) -> None:
        poll = float(self.app.config["MAIL_POLL_INTERVAL"])
        while not self._stopping:
            try:
                while await self.run_once() == BATCH and not self._stopping:
                    pass
            except StoreUnavailable:
                store_error()
                log.warning("mail outbox unavailable; will retry")
            except Exception:  # the sender must outlive any one bad round
                log.exception("mail round failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)
            self._wake.clear()

    async def run_once(self) -> int:
        """Claim and deliver one batch; return how many were claimed."""
        lease = float(self.app.config["MAIL_LEASE"])
        claimed = await self.store.claim_mail(now(self.app), lease, BATCH)
        for mail in claimed:
            await self._deliver(mail)
        return len(claimed)

    async def _deliver(self, mail: Mail) -> None:
        try:
            message = await self._build(mail)
            await self.transport.send(message)
        except Dropped as why:
            await self.store.mark_mail_sent(mail.id, now(self.app), f"dropped: {why}")
            return
        except Exception as exc:  # MailError, or a bug building it: retried, then given up
            if not isinstance(exc, MailError):
                log.exception("building mail %s (%s) failed", mail.id, mail.kind)
            await self._failed(mail, exc)
            return
        await self.store.mark_mail_sent(mail.id, now(self.app))

    async def _failed(self, mail: Mail, exc: Exception) -> None:
        mail_failed()
        config = self.app.config
        error = f"{type(exc).__name__}: {exc}"
        if mail.attempts >= int(config["MAIL_MAX_ATTEMPTS"]):
            log.error(
                "gave up mail %s (%s) after %s attempts: %s",
                mail.id,
                mail.kind,
                mail.attempts,
                error,
            )
            await self.store.give_up_mail(mail.id, error, now(self.app))
            return
        delay = min(MAX_DELAY, float(config["MAIL_RETRY_DELAY"]) * 2 ** (mail.attempts - 1))
        log.warning(
            "mail %s (%s) attempt %s failed, retry in %.0f s: %s",
            mail.id,
            mail.kind,
            mail.attempts,
            delay,
            error,
        )
        await self.store.retry_mail(mail.id, error, now(self.app) + delay)

    async def _build(self, mail: Mail) -> EmailMessage:
        context: dict[str, Any] = dict(mail.context)
        config = self.app.config
        public_url = str(config["PUBLIC_URL"]).rstrip("/")
        if mail.kind in LINKS:
            context.update(await self._link(mail, public_url))
        context.setdefault("name", "")
        async with self.app.app_context():
            return await build_message(
                mail.kind,
                mail.recipient,
                {**context, "public_url": public_url, "app_name": "quart_auth_app"},
                str(config["MAIL_FROM"]),
            )

    async def _link(self, mail: Mail, public_url: str) -> dict[str, Any]:
        """Draw the link's token and store its hash, for the account the message is for."""
        purpose, path, lifetime_key = LINKS[mail.kind]
        if mail.kind == "password_reset":
            user = await self.store.select_user_by_email(mail.recipient)
        else:
            user = await self.store.select_user_by_id(mail.user_id or 0)
        if user is None or user.created_at > mail.created_at:
            raise Dropped("no such account")  # (or a later one under a reused id)
        if mail.kind == "verify_email" and (user.email_verified or user.email != mail.recipient):
            raise Dropped("address already verified or changed")
        if mail.context.get("epoch", user.epoch) != user.epoch:
            raise Dropped("the credentials changed since it was asked for")
        lifetime = float(self.app.config[lifetime_key])
        token = secrets.token_urlsafe(TOKEN_BYTES)
        new_email = mail.recipient if mail.kind == "email_change" else ""
        await self.store.insert_token(
            hash_token(token), purpose, user, new_email, now(self.app), lifetime
        )
        return {
            "name": user.name,
            "link": f"{public_url}{path}{token}",
            "minutes": round(lifetime / 60),
            "hours": round(lifetime / 3600),
        }
