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
from zxcvbn.matching import L33T_TABLE

from .metrics import run_queued

PREHASH_KEY = b"quart_auth_app/password/v1"
# How far below the event loop the bcrypt threads run: +10 left a sign-in 4.4 s (p99) while
# pages kept the loops busy, +5 3.2 s, with pages 7 % slower; on asyncio workers +5 gives
# 2.3 s, and 0 (2.4 s) let a sign-in storm push page p99 to 6.9 x (docs/PERFORMANCE.md).
BCRYPT_NICE = 5

# zxcvbn's cost (SPEC §7: bounded) grows with the square of the length times the number of
# look-alike substitution tables it tries, and those grow ~1.4x with every distinct
# look-alike character ("@4!1|0$5+7"...): 1 for none, 32 at most for 6, 138 for 10, 736
# for all 20. So zxcvbn sees only a prefix, whose length depends on how many distinct
# look-alikes it holds: PREFIX_BY_LOOKALIKES[d] is the longest prefix allowed with d of
# them; past the table's end the prefix stops. Worst cases measured (zxcvbn 4.5, reference
# 2-core machine under load, found by a hypothesis search over look-alike runs, words with
# substitutions and repeats): before, with a plain 64-character prefix, 250-470 ms typical
# and up to 1.7 s; a plain 32 or 24 up to 850 or 490 ms; now 12-18 ms at any length.
# Past 24 characters a password is long enough to judge by its start: a weak start
# (a repeated word) is still refused.
STRENGTH_PREFIX = 24
PREFIX_BY_LOOKALIKES = (24, 24, 24, 24, 22, 19, 16, 14, 12, 10)
LOOKALIKES = frozenset(ch for subs in L33T_TABLE.values() for ch in subs)


def _prehash(password: str) -> bytes:
    digest = hmac.new(PREHASH_KEY, password.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest)


def hash_password(password: str, rounds: int) -> str:
    """A bcrypt hash of `password` (synchronous, CPU-bound: from async code use `Hasher`)."""
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode("ascii")


def check_password(password: str, password_hash: str) -> bool:
    """Whether `password` matches `password_hash` (synchronous, like `hash_password`)."""
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
        return await run_queued(self._pool, hash_password, password, self.rounds)

    async def check(self, password: str, password_hash: str | None) -> bool:
        """Whether `password` matches; with no hash, spend the same time and say no."""
        if password_hash is None:
            await self._run_check(password, self._dummy)
            return False
        return await self._run_check(password, password_hash)

    async def _run_check(self, password: str, password_hash: str) -> bool:
        return await run_queued(self._pool, check_password, password, password_hash)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether a stored hash was made with another cost than the configured one."""
        parts = password_hash.split("$")
        return len(parts) < 4 or parts[2] != f"{self.rounds:02d}"

    def close(self) -> None:
        """Stop the pool's threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def strength_input(password: str) -> str:
    """The prefix of `password` that zxcvbn judges: bounded in length and in look-alikes."""
    seen: set[str] = set()
    for i, ch in enumerate(password[:STRENGTH_PREFIX]):
        if ch in LOOKALIKES:
            seen.add(ch)
        if len(seen) >= len(PREFIX_BY_LOOKALIKES) or i >= PREFIX_BY_LOOKALIKES[len(seen)]:
            return password[:i]
    return password[:STRENGTH_PREFIX]


def weakness(password: str, user_inputs: list[str], min_score: int = 2) -> str | None:
    """A helpful message when `password` is among the easily guessed ones, else None.

    Synchronous and CPU-bound (up to ~20 ms): from async code, await `check_strength`.
    """
    result = zxcvbn(
        strength_input(password), user_inputs=[s[:STRENGTH_PREFIX] for s in user_inputs]
    )
    if result["score"] >= min_score:
        return None
    feedback = result["feedback"]
    hint = feedback.get("warning") or ""
    suggestions = " ".join(feedback.get("suggestions") or [])
    message = "This password is too easy to guess."
    return " ".join(part for part in (message, hint, suggestions) if part)


# One strength check at a time per process, in a thread below the event loop's priority:
# however many sign-ups arrive, zxcvbn takes at most one core's idle time. (Threads start
# on first use, not at import.)
_strength_pool = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="zxcvbn", initializer=_below_the_loop
)


async def check_strength(password: str, user_inputs: list[str], min_score: int) -> str | None:
    """`weakness` off the event loop, one check at a time per process (SPEC §7).

    Await it only once the attempt has been counted by the throttle.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_strength_pool, weakness, password, user_inputs, min_score)
