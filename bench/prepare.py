"""Prepare a bench database: users sharing one real bcrypt hash, and sessions with known tokens.

The schema comes from the app's own store (its migrations); the rows go in with
sqlite3 `executemany` in one transaction, since a million sessions through the
app would take longer than the bench itself.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

from quart_auth_app.passwords import hash_password
from quart_auth_app.sessions import new_token
from quart_auth_app.store.sqlite import SQLiteStore

PASSWORD = "bench-Password-7-quartz"
TOUCH_SPREAD = 60.0  # seconds: the app's longest interval between last_seen writes


def email(index: int) -> str:
    """The email of prepared user `index` (1-based), as login.lua builds it."""
    return f"bench-{index}@example.com"


async def _migrate(path: Path) -> None:
    store = SQLiteStore(str(path))
    await store.open()
    await store.close()


def create(path: Path, users: int, rounds: int) -> None:
    """A migrated database with `users` users whose password is PASSWORD (cost `rounds`)."""
    asyncio.run(_migrate(path))
    password_hash = hash_password(PASSWORD, rounds)
    now = time.time()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO users (email, name, password_hash, created_at) VALUES (?, ?, ?, ?)",
            ((email(i), f"Bench {i}", password_hash, now) for i in range(1, users + 1)),
        )


def add_sessions(path: Path, users: int, live: int, filler: int = 0) -> list[str]:
    """Store `live` sessions with known tokens (returned) and `filler` more with random hashes.

    The known ones are spread over the filler, so lookups land all over the index.
    """
    now = time.time()
    tokens: list[str] = []
    every = max(1, (live + filler) // max(live, 1))
    live_every = max(1, live) * every  # the spread cycles once over the known tokens

    def rows() -> object:
        for i in range(live + filler):
            if i % every == 0 and len(tokens) < live:
                token, token_hash = new_token()
                tokens.append(token)
            else:
                token_hash = os.urandom(32)
            # last_seen spread over the last minute, as in steady use: the app refreshes it
            # at most once a minute per session, and equal values would make every session
            # due for that write at the same moment (a herd no real site sees).
            seen = now - TOUCH_SPREAD * (i % live_every) / live_every
            yield (f"bench-{i}", token_hash, i % users + 1, seen, seen, now + 86400)

    with sqlite3.connect(path) as db:
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -262144")  # 256 MiB: the inserts stay in memory
        db.executemany(
            """INSERT INTO sessions (id, token_hash, user_id, data, remember, created_at,
                                     last_seen, expires_at, user_agent, ip)
               VALUES (?, ?, ?, '{}', 0, ?, ?, ?, 'wrk', '127.0.0.1')""",
            rows(),  # type: ignore[arg-type]
        )
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert len(tokens) == live
    return tokens


def write_tokens(path: Path, tokens: list[str]) -> Path:
    """One token per line, for the Lua scripts."""
    path.write_text("\n".join(tokens) + "\n")
    return path


def count(path: Path, sql: str, *params: object) -> int:
    """A count from the database, read-only (the server may still be running)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute(sql, params).fetchone()[0])


def emails_like(path: Path, pattern: str) -> list[str]:
    """Emails of users matching a LIKE pattern."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [
            row[0] for row in db.execute("SELECT email FROM users WHERE email LIKE ?", (pattern,))
        ]
