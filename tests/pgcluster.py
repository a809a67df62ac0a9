"""A throwaway PostgreSQL cluster in a temporary directory, on a free loopback port.

Used by the fault test (which stops and starts its own cluster) and, as a script,
by scripts/with-postgres and scripts/demo-multinode:

    python tests/pgcluster.py COMMAND ARGS...   # run COMMAND with QUART_AUTH_TEST_PG_DSN set

The server runs as an unprivileged user (`postgres`) when we are root, since
PostgreSQL refuses to run as root. It is always stopped by its own PID file
(`pg_ctl stop`), never by name.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import asyncpg

SUPERUSER = "postgres"


def bindir() -> Path | None:
    """Where initdb and pg_ctl live (Debian's newest version first), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """initdb + pg_ctl in a temporary directory; `close()` stops it and removes it."""

    def __init__(self, bin_path: Path | None = None, port: int | None = None) -> None:
        found = bin_path or bindir()
        if found is None:
            raise RuntimeError("PostgreSQL (initdb) is not installed")
        self.bin = found
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="quart-auth-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        subprocess.run(command, check=check, stdout=subprocess.DEVNULL, cwd=self.root)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root}"
            " -c fsync=off -c full_page_writes=off -c max_connections=300"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: disconnect clients; immediate: like a crash)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def close(self) -> None:
        """Stop the server if it still runs (a Ctrl-C may have stopped it) and remove every file."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def database_url(admin_dsn: str, name: str) -> str:
    """The admin DSN with its database swapped for `name`."""
    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(admin_dsn: str, template: str | None = None) -> str:
    """CREATE DATABASE t_<random> (a copy of `template` when given); return its name."""
    name = f"t_{secrets.token_hex(6)}"
    copy = f" TEMPLATE {template}" if template else ""
    db = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await db.execute(f"CREATE DATABASE {name}{copy}")
    finally:
        await db.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop a test database, disconnecting anyone still on it."""
    db = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await db.close()


async def create_template(admin_dsn: str) -> str:
    """A database with the app's schema, to copy per test (faster than migrating each)."""
    from quart_auth_app.store.postgres import PostgresStore

    name = await create_database(admin_dsn)
    store = PostgresStore(database_url(admin_dsn, name), pool_size=1)
    try:
        await store.migrate()
    finally:
        await store.close()
    return name


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    """Run argv with a fresh cluster's DSN in QUART_AUTH_TEST_PG_DSN; always clean up."""
    if not argv:
        print("usage: pgcluster.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    if bindir() is None:
        print("PostgreSQL not installed: PostgreSQL tests will skip.", file=sys.stderr)
        return subprocess.call(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    cluster = Cluster()
    child: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        print(f"PostgreSQL test cluster on 127.0.0.1:{cluster.port}", file=sys.stderr)
        env = {**os.environ, "QUART_AUTH_TEST_PG_DSN": cluster.dsn()}
        child = subprocess.Popen(argv, env=env)
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # the child got the same Ctrl-C; let it finish
                continue
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            child.wait(timeout=30)
        cluster.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
