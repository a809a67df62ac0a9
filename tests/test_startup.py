"""Safe start (SPEC §8): workers starting together, a worker that cannot start, file modes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import resource
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from importlib import resources
from pathlib import Path

import httpx
import pytest
from servers import ROOT, Server, free_port, running

from quart_auth_app.store import StoreUnavailable
from quart_auth_app.store.migrations import split_migrations
from quart_auth_app.store.sqlite import SQLiteStore

MIGRATIONS = split_migrations(
    resources.files("quart_auth_app").joinpath("sql/sqlite.sql").read_text()
)
LATEST = MIGRATIONS[-1][0]
WORKERS = 4
FRESH_STARTS = 5
COMPANIONS = ("", "-wal", "-shm", ".lock")
PASSWORD = "plum-orbit-canyon-42"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pragma(path: Path, name: str) -> object:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


def old_database(path: Path) -> None:
    """A database as an early version left it: migration 1 only, rollback journal, 0644."""
    with closing(sqlite3.connect(path)) as db:
        for statement in MIGRATIONS[0][1]:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {MIGRATIONS[0][0]}")
        db.commit()
    path.chmod(0o644)


def all_workers_up(server: Server, workers: int) -> None:
    """Every worker announced itself, none failed, and the server still answers."""
    deadline = time.monotonic() + 20
    while len(server.worker_pids()) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log_text()
    assert len(server.worker_pids()) == workers, log
    assert "Traceback" not in log and "database is locked" not in log, log
    assert server.process.poll() is None, log
    assert httpx.get(f"{server.url}/healthz", timeout=5).json()["status"] == "ok"


# The lock, without a server


@contextmanager
def held(lock: Path) -> Iterator[None]:
    """Hold the lock file a starting worker takes, as another worker preparing the file would."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def test_open_waits_for_the_worker_preparing_the_file(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    store = SQLiteStore(str(path))
    with held(Path(f"{path}.lock")):
        opening = asyncio.create_task(store.open())
        await asyncio.sleep(0.3)
        assert not opening.done()
    await asyncio.wait_for(opening, 10)
    try:
        assert pragma(path, "journal_mode") == "wal"
        assert pragma(path, "user_version") == LATEST
    finally:
        await store.close()


async def test_concurrent_opens_in_one_process_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    old_database(path)
    stores = [SQLiteStore(str(path)) for _ in range(6)]
    await asyncio.gather(*(store.open() for store in stores))
    for store in stores:
        await store.close()
    assert pragma(path, "user_version") == LATEST
    assert pragma(path, "journal_mode") == "wal"


async def test_a_file_that_is_not_a_database_fails_open_and_leaves_no_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.sqlite3"
    path.write_bytes(b"not a database" * 512)
    before = connection_threads()
    with pytest.raises(StoreUnavailable, match="not a database"):
        await SQLiteStore(str(path)).open()
    # A connection's thread left running kept a failed Hypercorn worker from ever exiting.
    deadline = time.monotonic() + 5
    while connection_threads() - before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not connection_threads() - before


def connection_threads() -> set[threading.Thread]:
    """aiosqlite's threads, one per open connection."""
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


# The real server


@pytest.mark.integration
@pytest.mark.slow
def test_many_workers_start_together_on_a_fresh_database(tmp_path: Path) -> None:
    for attempt in range(FRESH_STARTS):
        database = tmp_path / f"fresh-{attempt}.sqlite3"
        with running(tmp_path, {"QUART_DATABASE": str(database)}, workers=WORKERS) as server:
            all_workers_up(server, WORKERS)
        assert pragma(database, "user_version") == LATEST
        assert pragma(database, "journal_mode") == "wal"


@pytest.mark.integration
def test_workers_start_together_on_an_old_database(tmp_path: Path) -> None:
    database = tmp_path / "old.sqlite3"
    old_database(database)
    with running(tmp_path, {"QUART_DATABASE": str(database)}, workers=WORKERS) as server:
        all_workers_up(server, WORKERS)
        assert pragma(database, "user_version") == LATEST
        assert pragma(database, "journal_mode") == "wal"
        # An existing 0644 database (and what SQLite made beside it) is owner-only now.
        assert {name: mode(Path(f"{database}{name}")) for name in COMPANIONS} == dict.fromkeys(
            COMPANIONS, 0o600
        )


def start_broken(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Hypercorn on a DATABASE that is not a database: every worker fails at start-up."""
    database = tmp_path / "broken.sqlite3"
    database.write_bytes(b"not a database" * 512)
    log = tmp_path / "broken.log"
    env = {**os.environ, "QUART_DATABASE": str(database)}
    args = ["--config", str(ROOT / "hypercorn.toml"), "--bind", f"127.0.0.1:{free_port()}"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "quart_auth_app.serve", *args, "--workers", "2"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log


@contextmanager
def stopped_within(process: subprocess.Popen[bytes], seconds: float) -> Iterator[int]:
    """The server's exit status, once it has stopped by itself; killed if it has not."""
    try:
        yield process.wait(timeout=seconds)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)


@pytest.mark.integration
def test_a_worker_that_cannot_start_stops_the_server_and_says_why(tmp_path: Path) -> None:
    process, log = start_broken(tmp_path)
    with stopped_within(process, 30):
        pass
    text = log.read_text(errors="replace")
    assert f"cannot open the database {tmp_path / 'broken.sqlite3'}: file is not a database" in text
    assert "Running on" not in text


@pytest.mark.integration
def test_a_worker_that_cannot_start_makes_the_server_exit_non_zero(tmp_path: Path) -> None:
    process, _ = start_broken(tmp_path)
    with stopped_within(process, 30) as status:
        assert status != 0


@pytest.mark.integration
async def test_database_files_are_owner_only_after_a_write(tmp_path: Path) -> None:
    database = tmp_path / "app.sqlite3"
    with running(tmp_path, {"QUART_DATABASE": str(database)}, workers=2) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            response = await client.post(
                "/api/register",
                json={"email": "modes@example.com", "password": PASSWORD},
            )
        assert response.status_code == 201, response.text
        assert {name: mode(Path(f"{database}{name}")) for name in COMPANIONS} == dict.fromkeys(
            COMPANIONS, 0o600
        )


@pytest.mark.integration
def test_an_oversized_request_head_is_refused(tmp_path: Path) -> None:
    with running(tmp_path, {"QUART_DATABASE": str(tmp_path / "app.sqlite3")}) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with sock:
            # h11 counts only a head still incomplete after a read (up to 64 KiB), so a head
            # between 16 and ~80 KiB may pass; this one cannot.
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
            assert sock.recv(64).startswith(b"HTTP/1.1 431 ")


@pytest.mark.integration
def test_workers_run_with_the_open_file_limit_raised(tmp_path: Path) -> None:
    """A soft limit of 1,024 descriptors let a few thousand idle clients refuse everyone."""
    env = {"QUART_DATABASE": str(tmp_path / "app.sqlite3")}
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("the hard limit itself is 1,024: nothing to raise to")
    with running(tmp_path, env, workers=2, open_files=1024) as server:
        for pid in server.worker_pids():
            limits = Path(f"/proc/{pid}/limits").read_text()
            [line] = [row for row in limits.splitlines() if row.startswith("Max open files")]
            assert int(line.split()[3]) > 1024, line


def test_hypercorn_toml_bounds_an_unfinished_request_head() -> None:
    """Hypercorn times an unfinished head with the keep-alive clock: that is its bound."""
    config = tomllib.loads((ROOT / "hypercorn.toml").read_text())
    assert config["keep_alive_timeout"] <= 30
    assert config["read_timeout"] > config["keep_alive_timeout"]  # or it cuts keep-alive short


@pytest.mark.integration
def test_a_slow_request_head_is_dropped_after_the_keep_alive(tmp_path: Path) -> None:
    env = {"QUART_DATABASE": str(tmp_path / "app.sqlite3")}
    with running(tmp_path, env, workers=1, args=("--keep-alive", "2")) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        with sock:
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            for _ in range(3):  # a byte now and then does not keep it open
                time.sleep(0.5)
                sock.sendall(b"X-Slow: 1\r\n")
            assert sock.recv(64) == b""  # closed by the server
            assert time.monotonic() - started < 10


def sockets_held(pid: int) -> int:
    """How many sockets a process has open."""
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:"))


@pytest.mark.integration
def test_connections_opened_at_once_are_spread_over_the_workers(tmp_path: Path) -> None:
    """With one shared listening socket the worker that woke first took them all (6 tries
    in 8): each worker now listens on sockets of its own (serve.own_sockets)."""
    env = {"QUART_DATABASE": str(tmp_path / "app.sqlite3")}
    with running(tmp_path, env, workers=2) as server:
        all_workers_up(server, 2)
        workers = sorted(server.worker_pids())
        for attempt in range(3):
            before = {pid: sockets_held(pid) for pid in workers}
            clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(64)]
            try:
                for sock in clients:  # answered: accepted by one worker or the other
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                for sock in clients:
                    assert sock.recv(64).startswith(b"HTTP/1.1 200 "), attempt
                taken = [sockets_held(pid) - before[pid] for pid in workers]
            finally:
                for sock in clients:
                    sock.close()
            assert sum(taken) == 64 and min(taken) >= 16, (attempt, taken)
            time.sleep(0.5)  # the workers see the connections close
