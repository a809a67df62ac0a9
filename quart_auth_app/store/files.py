"""The SQLite file's neighbours: owner-only modes and the lock files (SPEC §8).

`<db>.lock` lets one worker at a time create, convert and migrate the database at
start; `<db>.purge.lock` lets one purge at a time. Both are flocks, released when
their descriptor closes (also when a process dies).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

OPEN_LOCK_TIMEOUT = 60.0  # seconds a worker waits for another to prepare the file
OPEN_LOCK_POLL = 0.05
FILE_MODE = 0o600  # the database holds password hashes and session tokens (SPEC §8)


def own_files(path: str) -> None:
    """Create the database file owner-only if it is missing; tighten existing files to 0600.

    SQLite gives -wal and -shm the main file's mode, so creating that file 0600 is what
    keeps them private; files an older version left 0644 are tightened here.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}.lock", f"{path}.purge.lock"):
        try:
            if os.stat(name).st_mode & 0o777 != FILE_MODE:
                os.chmod(name, FILE_MODE)
        except FileNotFoundError:
            pass


@asynccontextmanager
async def exclusive(path: str) -> AsyncIterator[None]:
    """Hold an exclusive flock on the file `path`, polling so the event loop never blocks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        deadline = time.monotonic() + OPEN_LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked {OPEN_LOCK_TIMEOUT:.0f} s") from None
                await asyncio.sleep(OPEN_LOCK_POLL)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def try_flock(path: str) -> int | None:
    """A descriptor holding an exclusive flock on the file `path`, or None if another has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
