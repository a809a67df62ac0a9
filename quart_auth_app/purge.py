"""The background purge: expired sessions, stale throttle counters, old events (and each
account's past its cap), expired link tokens, answered passkey challenges and sent mail, in
short batches, one process at a time (SPEC §8)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .sessions import expiry
from .store import Store

PURGE_BATCH = 1000  # rows per purge transaction: a few ms of write lock each


async def purge_expired(config: Any, store: Store) -> int:
    """Delete expired sessions, stale throttle counters, old and ownerless events (and each
    account's past its cap), expired link tokens, answered passkey challenges and sent mail;
    return the sessions.

    One process at a time across workers and nodes (the store's maintenance lock; a process
    that does not get it skips the round and returns 0), in batches of PURGE_BATCH rows,
    each its own short transaction, so a large backlog never holds the write lock for long
    (SPEC §8).
    """
    async with store.maintenance() as mine:
        if not mine:
            return 0
        now = time.time()
        deleted = await _in_batches(lambda n: store.delete_expired_sessions(expiry(config, now), n))
        window_cutoff = now - float(config["THROTTLE_WINDOW"])
        await _in_batches(lambda n: store.delete_stale_throttle(window_cutoff, n))
        events_cutoff = now - float(config["EVENT_RETENTION"])
        await _in_batches(lambda n: store.delete_old_events(events_cutoff, n))
        await _in_batches(lambda n: store.delete_ownerless_events(window_cutoff, n))
        await trim_events(store)
        await _in_batches(lambda n: store.delete_expired_tokens(now, n))
        await _in_batches(lambda n: store.delete_used_challenges(now, n))
        mail_cutoff = now - float(config["MAIL_RETENTION"])
        await _in_batches(lambda n: store.delete_old_mail(mail_cutoff, n))
        return deleted


async def trim_events(store: Store) -> int:
    """Cut each account's events back to its newest `store.events_per_user`.

    Here and not as events are written: a request never reads a user's other events, so
    what a failed sign-in costs does not depend on the account's history (SPEC §7). Between
    two purges an account gains at most what the throttle admits.
    """
    trimmed = 0
    for user_id in await store.select_users_over_event_cap(store.events_per_user):
        trimmed += await store.trim_events(user_id, store.events_per_user)
    return trimmed


async def _in_batches(delete: Callable[[int], Awaitable[int]]) -> int:
    total = 0
    while True:
        started = time.monotonic()
        count = await delete(PURGE_BATCH)
        total += count
        if count < PURGE_BATCH:
            return total
        # Rest twice as long as the batch took: other workers' writers poll SQLite's lock (its
        # busy handler sleeps up to 100 ms between tries); back-to-back batches starved them
        # (430 ms waits at a 1:1 rest, under 100 ms at 2:1, with 100,000 rows to purge).
        await asyncio.sleep(2 * (time.monotonic() - started))
