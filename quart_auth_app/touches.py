"""last_seen written behind the response, in batches (SPEC §5 idle timeout, §10 latency).

A signed-in page costs one indexed read; about once a minute per session it also
moves the session's last_seen. That write waits for the database's write lock,
which the other workers (and nodes) share, so doing it inline made one request in
a hundred wait for seconds under load. Here it is queued instead, and one task per
process writes whatever is queued in one statement.

Nothing about a session is cached: every request still reads its row, so a revoked
or expired session ends on every worker at once. A touch still queued when the
process dies is lost, which can only make a session look idle a little earlier.
"""

from __future__ import annotations

import asyncio
import logging

from .store import Store, StoreUnavailable

log = logging.getLogger(__name__)


class Touches:
    """Queued last_seen updates and the task that writes them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[bytes, float] = {}
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the writer runs: from the app's before_serving to its after_serving."""
        return self._task is not None

    def start(self) -> None:
        """Write queued touches from now on (call from the serving event loop)."""
        self._stopping = False
        self._wake = asyncio.Event()  # bound to this loop (a test may serve the app twice)
        self._writing = asyncio.Lock()
        self._task = asyncio.create_task(self._write_forever())

    async def stop(self) -> None:
        """Write what is queued, then end the task."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            await task

    async def touch(self, token_hash: bytes, now: float) -> None:
        """Record that the session was used at `now`; queued while serving, else written now."""
        if self._task is None:
            await self.store.touch_sessions([token_hash], now)
            return
        self._pending.setdefault(token_hash, now)
        self._wake.set()

    async def flush(self) -> None:
        """Write every queued touch; return once they and any write in flight are done."""
        async with self._writing:
            batch, self._pending = self._pending, {}
            if batch:
                # One time for the batch: the earliest, so no session is made to look newer
                # than it is (the batch spans milliseconds).
                await self.store.touch_sessions(list(batch), min(batch.values()))

    async def _write_forever(self) -> None:
        while not self._stopping or self._pending:  # at stop, also what came in mid-write
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except StoreUnavailable as exc:  # an outage: those touches are lost, no more
                log.warning("last_seen not written, the database is unavailable: %s", exc)
            except Exception:  # anything else is a bug worth its traceback; keep serving
                log.exception("writing last_seen failed")
