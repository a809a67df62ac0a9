"""Failed sign-in and sign-up limits, counted in the database so every worker agrees (SPEC §7)."""

from __future__ import annotations

import math
import time

from quart import current_app, request

from .errors import AppError
from .store import Store
from .timefmt import duration


def client_address() -> str:
    """The client's address: the socket's, or what a configured trusted proxy reported."""
    return request.remote_addr or "unknown"


def _too_many(retry_after: float) -> AppError:
    wait = max(1, math.ceil(retry_after))
    return AppError(
        429,
        "too_many_attempts",
        f"Too many attempts. Please wait {duration(wait)} and try again.",
        retry_after=wait,
    )


class Throttle:
    """Fixed-window counters keyed by account and by address."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _on(self) -> bool:
        return bool(current_app.config["THROTTLE_ENABLED"])

    def _window(self) -> tuple[float, float]:
        return time.time(), float(current_app.config["THROTTLE_WINDOW"])

    async def _refuse_if_over(self, key: str, limit: int) -> None:
        """429 when `key` has used its limit; only a read, so refused floods write nothing."""
        now, window = self._window()
        state = await self.store.select_throttle(key, now, window)
        if state is not None and state[0] >= limit:
            raise _too_many(state[1] + window - now)

    async def _reserve(self, key: str, limit: int) -> None:
        """Count an attempt before judging it, so concurrent attempts cannot overshoot the limit.

        Callers read first (`_refuse_if_over`); an attempt that lost the race for the last
        place is taken back, since it tried nothing.
        """
        now, window = self._window()
        count, start = await self.store.hit_throttle(key, now, window)
        if count > limit:
            await self.store.forgive_throttle(key)
            raise _too_many(start + window - now)

    @staticmethod
    def _account_key(email: str) -> str:
        return f"account:{email}"

    @staticmethod
    def _address_key() -> str:
        return f"address:{client_address()}"

    async def check_signin(self, email: str) -> None:
        """Raise 429 when this address or this account has failed too often lately.

        The attempt is counted against both here, before bcrypt runs, and forgiven by
        `signin_succeeded`: whatever the concurrency, no more than the limit of guesses run.
        """
        if not self._on():
            return
        config = current_app.config
        address = (self._address_key(), int(config["THROTTLE_ADDRESS_FAILURES"]))
        account = (self._account_key(email), int(config["THROTTLE_ACCOUNT_FAILURES"]))
        for key, limit in (address, account):
            await self._refuse_if_over(key, limit)
        await self._reserve(*address)
        try:
            await self._reserve(*account)
        except AppError:
            await self.store.forgive_throttle(address[0])
            raise

    async def signin_succeeded(self, email: str) -> None:
        """Forget the account's failures and forgive this attempt to the address."""
        if self._on():
            await self.store.clear_throttle(self._account_key(email))
            await self.store.forgive_throttle(self._address_key())

    async def check_signup(self) -> None:
        """Count a sign-up attempt against the address; 429 past the limit.

        Attempts for an email that is already taken count too, which also limits
        probing for who has an account.
        """
        if self._on():
            key = f"signup:{client_address()}"
            limit = int(current_app.config["THROTTLE_SIGNUPS_PER_ADDRESS"])
            await self._refuse_if_over(key, limit)
            await self._reserve(key, limit)
