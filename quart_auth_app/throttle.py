"""Failed sign-in and sign-up limits, counted in the database so every worker agrees (SPEC §7).

Keys are HMACs of what they count (an email as typed, a network, a device), never the
plaintext: people type passwords into the email field. IPv6 clients are counted per /64,
the smallest network one subscriber usually gets. A browser with a device cookie for
the account (`devices.py`) is counted on its own, so the owner survives a lockout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from quart import current_app, request

from . import clock
from .agents import describe
from .devices import derive_key, device_nonce
from .errors import AppError
from .metrics import sign_in_throttled
from .sessions import client_meta
from .store import FailureEvent, Store, User
from .timefmt import duration


def client_address() -> str:
    """The client's address: the socket's, or what a configured trusted proxy reported."""
    return request.remote_addr or "unknown"


def client_network() -> str:
    """What one client is counted as: its IPv4 address, or its IPv6 /64 network."""
    address = client_address()
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


IN_FLIGHT_POLL = 0.05  # seconds between looks at a full key while others are in flight


def _too_many(retry_after: float) -> AppError:
    wait = max(1, math.ceil(retry_after))
    return AppError(
        429,
        "too_many_attempts",
        f"Too many attempts. Please wait {duration(wait)} and try again.",
        retry_after=wait,
    )


@dataclass(frozen=True)
class Attempt:
    """A counted sign-in attempt: what to forgive if it succeeds."""

    clear: tuple[str, ...] = ()
    forgive: tuple[str, ...] = ()
    event_id: int | None = None


class Throttle:
    """Fixed-window counters keyed by account, by device and by network."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def key(kind: str, value: str) -> str:
        """The stored key for `value`: an HMAC under the app's secret, never the plaintext."""
        mac = hmac.new(derive_key("throttle"), f"{kind}:{value}".encode(), hashlib.sha256)
        return f"{kind}:{mac.hexdigest()[:32]}"

    def _on(self) -> bool:
        return bool(current_app.config["THROTTLE_ENABLED"])

    async def _full(self, limits: dict[str, int]) -> tuple[float, bool] | None:
        """(seconds to wait, counted lately) for a key that has used its limit, else None.

        Only reads, so a refused flood writes nothing. "Counted lately" (within
        THROTTLE_IN_FLIGHT_WAIT): attempts counted then may still be running and may yet
        succeed, which gives their count back.
        """
        now, window = clock.now(), float(current_app.config["THROTTLE_WINDOW"])
        in_flight = float(current_app.config["THROTTLE_IN_FLIGHT_WAIT"])
        for key, limit in limits.items():
            state = await self.store.select_throttle(key, now, window)
            if state is not None and state.attempts >= limit:
                return state.window_start + window - now, state.last_hit > now - in_flight
        return None

    async def _refuse_if_full(self, limits: dict[str, int]) -> None:
        """429 when a key has used its limit (a read only)."""
        full = await self._full(limits)
        if full is not None:
            raise _too_many(full[0])

    async def _count(
        self, limits: dict[str, int], failure: Callable[[], FailureEvent] | None = None
    ) -> int | None:
        """Count one attempt against every key (all or none), or raise 429.

        The counts are read first, so a refused flood only reads; the write then counts
        the attempt before it runs, so concurrent attempts cannot overshoot a limit. An
        attempt that finds a key full while others were counted moments ago waits (up to
        THROTTLE_IN_FLIGHT_WAIT, no CPU) for them to finish: if they succeed they give
        their places back, so right passwords signing in at once are never refused for
        each other. `failure` makes the provisional failure event, only once the attempt is
        admitted (naming the device parses the user agent: a refused one costs only reads).
        Returns that event's id, if one was recorded.
        """
        config = current_app.config
        deadline = time.monotonic() + float(config["THROTTLE_IN_FLIGHT_WAIT"])
        event: FailureEvent | None = None
        while True:
            full = await self._full(limits)
            if full is None:
                now, window = clock.now(), float(config["THROTTLE_WINDOW"])
                if failure is not None and event is None:
                    event = failure()
                admission = await self.store.hit_throttles(limits, now, window, event)
                if admission.retry_after is None:
                    return admission.event_id
                full = (admission.retry_after, True)  # others were counted at this instant
            retry_after, lately = full
            if not lately or time.monotonic() >= deadline:
                sign_in_throttled(failure is not None)  # only check_signin passes `failure`
                raise _too_many(retry_after)
            await asyncio.sleep(IN_FLIGHT_POLL)

    async def check_signin(self, email: str, user: User | None, event_kind: str) -> Attempt:
        """Count a password attempt for `email` before bcrypt runs; 429 when over a limit.

        From a browser with a valid device cookie for the account, the attempt counts
        against that device alone; otherwise against the network and the account. A
        provisional `event_kind` event is written for a known account in the same
        transaction (and dropped by `succeeded`), so known and unknown emails cost the same.
        """
        config = current_app.config

        def failure() -> FailureEvent:
            agent, ip = client_meta()
            return FailureEvent(email, event_kind, ip, agent, describe(agent))

        if not self._on():
            return Attempt(event_id=await self._count({}, failure))
        nonce = device_nonce(user) if user is not None else None
        if nonce is not None:
            device = self.key("device", nonce)
            limits = {device: int(config["THROTTLE_DEVICE_FAILURES"])}
            event_id = await self._count(limits, failure)
            return Attempt(clear=(device,), event_id=event_id)
        network = self.key("network", client_network())
        account = self.key("account", email)
        limits = {
            network: int(config["THROTTLE_ADDRESS_FAILURES"]),
            account: int(config["THROTTLE_ACCOUNT_FAILURES"]),
        }
        event_id = await self._count(limits, failure)
        return Attempt(clear=(account,), forgive=(network,), event_id=event_id)

    async def succeeded(self, attempt: Attempt) -> None:
        """The attempt was right: forget its failures and drop its provisional event."""
        if attempt.clear or attempt.forgive or attempt.event_id is not None:
            await self.store.settle_throttles(attempt.clear, attempt.forgive, attempt.event_id)

    async def check_signup(self) -> None:
        """Count a sign-up attempt against the network; 429 past the limit.

        Attempts for an email that is already taken count too, which also limits
        probing for who has an account.
        """
        if self._on():
            key = self.key("signup", client_network())
            await self._count({key: int(current_app.config["THROTTLE_SIGNUPS_PER_ADDRESS"])})

    async def check_mail(self, email: str) -> None:
        """Count a request that mails `email` (a reset link, a verification resend) against
        the address and the client's network; 429 past either limit. Known and unknown
        addresses count alike, so the answer says nothing about who has an account."""
        if self._on():
            config = current_app.config
            limits = {
                self.key("mail", email): int(config["THROTTLE_MAIL_PER_EMAIL"]),
                self.key("mail-network", client_network()): int(
                    config["THROTTLE_MAIL_PER_ADDRESS"]
                ),
            }
            await self._count(limits)

    def keys_of(self, user: User) -> list[str]:
        """The keys that count the account: deleted with it (SPEC §11). Those of its other
        browsers are unknown here (their nonces are in their cookies) and expire with the
        window; this browser's is among them."""
        keys = [self.key("account", user.email), self.key("mail", user.email)]
        nonce = device_nonce(user)
        return [*keys, self.key("device", nonce)] if nonce else keys

    def _session_writes(self, session_id: str) -> dict[str, int]:
        return {self.key("writes", session_id): int(current_app.config["THROTTLE_SESSION_WRITES"])}

    async def check_session_write(self, session_id: str) -> None:
        """429 when this session has made too many account changes (revocations) lately."""
        if self._on():
            await self._refuse_if_full(self._session_writes(session_id))

    async def count_session_write(self, session_id: str) -> None:
        """Count an account change this session made (one that changed something).

        Counted, never refused: the change is done by now, and a concurrent one that
        passed `check_session_write` at the same time must not answer 429 for it.
        """
        if self._on():
            [key] = self._session_writes(session_id)
            now, window = clock.now(), float(current_app.config["THROTTLE_WINDOW"])
            await self.store.hit_throttles({key: sys.maxsize}, now, window)
