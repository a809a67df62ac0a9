"""Every query of the store, written once for both engines (SPEC §8, §9).

Statements use named parameters (`:name`); SQLite takes them as they are and the
PostgreSQL engine compiles them to `$n`. Each engine offers the same three calls,
outside a transaction (`fetch_all`, `fetch_one`, `execute`: one statement each, reads
on their own connections) or inside one (`async with self.transaction() as tx`), the
way quart-db draws the line. The few statements that genuinely differ between the
engines live in `sqlite.py` and `postgres.py`, each saying why.
"""

from __future__ import annotations

from .accounts import AccountQueries
from .mail import MailQueries
from .passkeys import PasskeyQueries
from .sessions import SessionQueries


class SQLStore(AccountQueries, SessionQueries, PasskeyQueries, MailQueries):
    """The `Store` on any engine: users and sessions, throttle counters and events, link
    tokens and the mail outbox, second factors and passkeys."""
