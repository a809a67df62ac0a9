"""Password hashing and strength (SPEC §6): bcrypt in a bounded pool, zxcvbn for strength.

Passwords of any length: bcrypt reads only 72 bytes, so every password is
first reduced to HMAC-SHA256 (keyed with a fixed, app-specific string, which
keeps hashes from other sites' plain SHA-256 dumps from being tried directly)
and base64-encoded to 44 ASCII bytes without NULs, then given to bcrypt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import bcrypt
from zxcvbn import zxcvbn

PREHASH_KEY = b"quart_auth_app/password/v1"
BCRYPT_NICE = 10  # how far below the event loop the bcrypt threads run
# zxcvbn grows fast with length; past this a password is long enough to judge by its start.
STRENGTH_PREFIX = 64


def _prehash(password: str) -> bytes:
    digest = hmac.new(PREHASH_KEY, password.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest)


def _hash(password: str, rounds: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode("ascii")


def _check(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), password_hash.encode("ascii"))
    except ValueError:  # a malformed stored hash never matches
        return False


def _below_the_loop() -> None:
    """Run this pool thread at a lower CPU priority than the event loop (Linux: per thread).

    A sign-in storm then uses every idle cycle, but page requests win the core when
    they need it, so they keep being served promptly (SPEC §6). Niced, not SCHED_IDLE:
    SCHED_IDLE kept pages a little quicker during storms, but while pages kept both
    cores busy a sign-in took 8-13 s instead of 2.8 s (docs/PERFORMANCE.md).
    """
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: no change
        nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + BCRYPT_NICE)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class Hasher:
    """bcrypt off the event loop, in a pool of about one thread per core."""

    def __init__(self, rounds: int, threads: int) -> None:
        self.rounds = rounds
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="bcrypt", initializer=_below_the_loop
        )
        # Checked for unknown accounts: a well-formed hash at the configured cost, ready from
        # the start (making one on first use made the first unknown email cost two bcrypt runs).
        self._dummy = f"$2b${rounds:02d}$" + "." * 53

    async def hash(self, password: str) -> str:
        """A new bcrypt hash of `password` at the configured cost."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _hash, password, self.rounds)

    async def check(self, password: str, password_hash: str | None) -> bool:
        """Whether `password` matches; with no hash, spend the same time and say no."""
        if password_hash is None:
            await self._run_check(password, self._dummy)
            return False
        return await self._run_check(password, password_hash)

    async def _run_check(self, password: str, password_hash: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _check, password, password_hash)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether a stored hash was made with another cost than the configured one."""
        parts = password_hash.split("$")
        return len(parts) < 4 or parts[2] != f"{self.rounds:02d}"

    def close(self) -> None:
        """Stop the pool's threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def weakness(password: str, user_inputs: list[str], min_score: int = 2) -> str | None:
    """A helpful message when `password` is among the easily guessed ones, else None."""
    result = zxcvbn(
        password[:STRENGTH_PREFIX], user_inputs=[s[:STRENGTH_PREFIX] for s in user_inputs]
    )
    if result["score"] >= min_score:
        return None
    feedback = result["feedback"]
    hint = feedback.get("warning") or ""
    suggestions = " ".join(feedback.get("suggestions") or [])
    message = "This password is too easy to guess."
    return " ".join(part for part in (message, hint, suggestions) if part)
