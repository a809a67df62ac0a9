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

    async def _check(self, limits: dict[str, int]) -> None:
        if not self._on():
            return
        now, window = time.time(), float(current_app.config["THROTTLE_WINDOW"])
        for key, limit in limits.items():
            state = await self.store.select_throttle(key, now, window)
            if state is not None and state[0] >= limit:
                raise _too_many(state[1] + window - now)

    async def _reserve(self, key: str, limit: int) -> None:
        """Count an attempt before judging it, so concurrent guesses cannot overshoot the limit."""
        now, window = time.time(), float(current_app.config["THROTTLE_WINDOW"])
        count, start = await self.store.hit_throttle(key, now, window)
        if count > limit:
            raise _too_many(start + window - now)

    @staticmethod
    def _account_key(email: str) -> str:
        return f"account:{email}"

    def _address_limits(self) -> dict[str, int]:
        limit = int(current_app.config["THROTTLE_ADDRESS_FAILURES"])
        return {f"address:{client_address()}": limit}

    async def check_signin(self, email: str) -> None:
        """Raise 429 when this address or this account has failed too often lately.

        The account's attempt is counted here, before bcrypt runs, and forgiven by
        `signin_succeeded`; the address's failures are counted by `signin_failed`.
        """
        if not self._on():
            return
        await self._check(self._address_limits())
        limit = int(current_app.config["THROTTLE_ACCOUNT_FAILURES"])
        await self._reserve(self._account_key(email), limit)

    async def signin_failed(self, email: str) -> None:
        """Count a failed sign-in against the address (the account's was counted up front)."""
        if self._on():
            now, window = time.time(), float(current_app.config["THROTTLE_WINDOW"])
            for key in self._address_limits():
                await self.store.hit_throttle(key, now, window)

    async def signin_succeeded(self, email: str) -> None:
        """Forget the account's failures (the address keeps its count)."""
        if self._on():
            await self.store.clear_throttle(self._account_key(email))

    def _signup_limits(self) -> dict[str, int]:
        return {
            f"signup:{client_address()}": int(current_app.config["THROTTLE_SIGNUPS_PER_ADDRESS"])
        }

    async def check_signup(self) -> None:
        """Raise 429 when this address has signed up too often lately."""
        await self._check(self._signup_limits())

    async def signed_up(self) -> None:
        """Count a sign-up against the address."""
        if self._on():
            now, window = time.time(), float(current_app.config["THROTTLE_WINDOW"])
            for key in self._signup_limits():
                await self.store.hit_throttle(key, now, window)
