"""SQLite connections end their aiosqlite threads, whether opening works or fails.

A thread left running kept a failed Hypercorn worker from ever exiting, and one that
calls back into an event loop already closed raises in that thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from quart_auth_app.store import StoreUnavailable
from quart_auth_app.store.sqlite import SQLiteStore
from quart_auth_app.store.sqlite_connection import connect
from quart_auth_app.store.sqlite_db import READERS


@pytest.fixture
async def before() -> AsyncIterator[set[threading.Thread]]:
    """The threads alive before the test, the loop's executor (connect uses it) among them.

    An executor of one thread, started here: the default one may start a thread of its
    own whenever a call comes before the last one's thread counts itself idle.
    """
    executor = ThreadPoolExecutor(max_workers=1)
    asyncio.get_running_loop().set_default_executor(executor)
    await asyncio.to_thread(int)
    yield set(threading.enumerate())
    executor.shutdown()


def started(before: set[threading.Thread]) -> set[threading.Thread]:
    """The threads alive now that were not before."""
    return set(threading.enumerate()) - before


async def ended(before: set[threading.Thread]) -> set[threading.Thread]:
    """The threads started since `before` still alive after at most two seconds.

    A closed connection's thread exits just after answering its last call.
    """
    deadline = time.monotonic() + 2
    while started(before) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return started(before)


async def test_a_connection_has_one_thread_until_closed(
    tmp_path: Path, before: set[threading.Thread]
) -> None:
    db = await connect(str(tmp_path / "app.sqlite3"))
    try:
        assert len(started(before)) == 1
    finally:
        await db.close()
    assert not await ended(before)


async def test_a_connect_that_fails_leaves_no_thread_behind(
    tmp_path: Path, before: set[threading.Thread]
) -> None:
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await connect(str(tmp_path / "missing" / "app.sqlite3"))
    # At once, not eventually: the test's event loop closes right after it.
    assert not started(before)


async def test_a_store_ends_its_threads_when_closed(
    tmp_path: Path, before: set[threading.Thread]
) -> None:
    store = SQLiteStore(str(tmp_path / "app.sqlite3"))
    await store.open()
    try:
        assert len(started(before)) == 1 + READERS
    finally:
        await store.close()
    assert not await ended(before)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing/app.sqlite3", None, "No such file or directory"),
        ("app.sqlite3", b"not a database" * 512, "not a database"),
    ],
)
async def test_a_store_that_cannot_open_leaves_no_thread_behind(
    tmp_path: Path, before: set[threading.Thread], name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StoreUnavailable, match=message):
        await SQLiteStore(str(path)).open()
    assert not await ended(before)
