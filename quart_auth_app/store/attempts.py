"""Throttle counters and security events: their queries, written once (SPEC §7)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import Admission, Event, FailureEvent, ThrottleState
from .engine import Engine, Queries

HIT_THROTTLE = """
    INSERT INTO throttle AS t (key, count, window_start, last_hit) VALUES (:key, 1, :now, :now)
    ON CONFLICT (key) DO UPDATE SET
      count = CASE WHEN t.window_start <= :cutoff THEN 1 ELSE t.count + 1 END,
      window_start = CASE WHEN t.window_start <= :cutoff THEN :now ELSE t.window_start END,
      last_hit = :now
    RETURNING count, window_start
"""
# An event of a known account; nothing if the account is gone meanwhile.
OWNED_EVENT = """
    INSERT INTO events (user_id, kind, ip, user_agent, device, created_at)
    SELECT id, :kind, :ip, :agent, :device, :now FROM users WHERE id = :user_id RETURNING id
"""
# A failed sign-in's event, for the account the typed email names or none (user_id NULL):
# known and unknown emails write the same row by the same statement (SPEC §7, equal cost).
# Nothing on a request's path reads a user's other events: the purge trims each account to
# its newest `events_per_user` and drops ownerless events after a throttle window.
FAILURE_EVENT = """
    INSERT INTO events (user_id, kind, ip, user_agent, device, created_at)
    VALUES ((SELECT id FROM users WHERE email = :email), :kind, :ip, :agent, :device, :now)
    RETURNING id
"""


class _Refused(Exception):
    """Raised inside a transaction to roll it back: a throttle key was full."""


class AttemptQueries(Engine):
    """What attempts leave behind: throttle counters and the security events."""

    events_per_user = 1000

    # throttling

    async def select_throttle(self, key: str, now: float, window: float) -> ThrottleState | None:
        """The key's state while its window is open, else None."""
        row = await self.fetch_one(
            """SELECT count, window_start, last_hit FROM throttle
               WHERE key = :key AND window_start > :cutoff""",
            {"key": key, "cutoff": now - window},
        )
        if row is None:
            return None
        return ThrottleState(int(row["count"]), float(row["window_start"]), float(row["last_hit"]))

    async def hit_throttles(
        self,
        limits: Mapping[str, int],
        now: float,
        window: float,
        failure: FailureEvent | None = None,
    ) -> Admission:
        """Count one attempt against every key in a fixed window, all or none.

        Past any key's limit nothing is written and the wait is returned. Otherwise
        `failure` is recorded, provisionally, for the account its email names: the same
        row, by the same statements, whether or not that account exists (SPEC §7, equal
        cost).
        """
        over = 0.0
        try:
            async with self.transaction() as tx:
                for key in sorted(limits):  # one order everywhere: no deadlock between nodes
                    [row] = await tx.fetch_all(  # RETURNING: exactly one row
                        HIT_THROTTLE, {"key": key, "now": now, "cutoff": now - window}
                    )
                    if row["count"] > limits[key]:
                        over = max(over, row["window_start"] + window - now)
                if over:
                    raise _Refused
                if failure is None or "\x00" in failure.email:
                    return Admission(None)
                event_id = await self._insert_event(
                    tx,
                    FAILURE_EVENT,
                    {"email": failure.email},
                    failure.kind,
                    failure.ip,
                    failure.user_agent,
                    failure.device,
                    now,
                )
                return Admission(None, event_id)
        except _Refused:
            return Admission(max(over, 1e-3))

    async def settle_throttles(
        self, clear: Sequence[str], forgive: Sequence[str], event_id: int | None
    ) -> None:
        """A counted attempt succeeded: clear and forgive keys, drop its provisional event."""
        async with self.transaction() as tx:
            for key in clear:
                await tx.execute("DELETE FROM throttle WHERE key = :key", {"key": key})
            for key in forgive:
                await tx.execute(
                    "UPDATE throttle SET count = count - 1 WHERE key = :key AND count > 0",
                    {"key": key},
                )
            if event_id is not None:
                await tx.execute("DELETE FROM events WHERE id = :id", {"id": event_id})

    # security events

    async def insert_event(
        self, user_id: int, kind: str, ip: str, user_agent: str, now: float, device: str = ""
    ) -> None:
        async with self.transaction() as tx:
            await self._insert_event(
                tx, OWNED_EVENT, {"user_id": user_id}, kind, ip, user_agent, device, now
            )

    async def _insert_event(
        self,
        tx: Queries,
        statement: str,
        who: dict[str, Any],
        kind: str,
        ip: str,
        user_agent: str,
        device: str,
        now: float,
    ) -> int | None:
        """Record an event by `statement` (its owner bound by `who`); its id, if one was made."""
        row = await tx.fetch_one(
            statement,
            {**who, "kind": kind, "ip": ip, "agent": user_agent, "device": device, "now": now},
        )
        return int(row["id"]) if row else None

    async def select_users_over_event_cap(self, keep: int) -> list[int]:
        """The accounts with more than `keep` events (one scan of the events; the purge only)."""
        rows = await self.fetch_all(
            """SELECT user_id FROM events WHERE user_id IS NOT NULL
               GROUP BY user_id HAVING count(*) > :keep""",
            {"keep": keep},
        )
        return [int(row["user_id"]) for row in rows]

    async def trim_events(self, user_id: int, keep: int) -> int:
        """Delete the user's events past the newest `keep`; how many went."""
        return await self.execute(
            """DELETE FROM events WHERE user_id = :user_id AND id NOT IN (
                 SELECT id FROM events WHERE user_id = :user_id
                 ORDER BY created_at DESC, id DESC LIMIT :keep)""",
            {"user_id": user_id, "keep": keep},
        )

    async def select_events_of_user(self, user_id: int, limit: int) -> list[Event]:
        rows = await self.fetch_all(
            """SELECT kind, ip, user_agent, created_at, device FROM events
               WHERE user_id = :user_id ORDER BY created_at DESC, id DESC LIMIT :limit""",
            {"user_id": user_id, "limit": limit},
        )
        return [Event(*row) for row in rows]
