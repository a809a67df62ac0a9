"""PostgreSQL stops under load: clean 503s, no hangs; it returns: the nodes recover, nothing is lost.

This test owns its cluster (tests/pgcluster.py), since it stops and starts it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pgcluster
import pytest
from servers import Server, running

pytestmark = [pytest.mark.postgres, pytest.mark.integration, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
REQUEST_TIMEOUT = 25.0  # a request slower than this counts as a hang
LOADERS = 2
MAX_REQUESTS = 3000  # per loader: the load loop is bounded in count as well as time
DOWN_FOR = 3.0  # seconds PostgreSQL stays down under load


@pytest.fixture
def cluster() -> Iterator[pgcluster.Cluster]:
    """A cluster of this test's own, stopped and removed afterwards."""
    if pgcluster.bindir() is None:
        pytest.skip("PostgreSQL (initdb) is not installed")
    owned = pgcluster.Cluster()
    try:
        owned.start()
        yield owned
    finally:
        owned.close()


def on_own_loop(work: object) -> object:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()  # type: ignore[arg-type]


class Load:
    """Sign-ups (writes) and session reads on both nodes from a few threads, recording outcomes."""

    def __init__(self, nodes: list[Server]) -> None:
        self.nodes = nodes
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.slowest = 0.0
        self.acknowledged: list[tuple[str, str]] = []  # (email, session token) answered 201
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(LOADERS)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=REQUEST_TIMEOUT * 2)

    def _send(self, client: httpx.Client, method: str, url: str, **kwargs: object) -> int | None:
        started = time.monotonic()
        try:
            response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors.append(f"{method} {url}: {exc!r}")
            return None
        finally:
            client.cookies.clear()
            with self.lock:
                self.slowest = max(self.slowest, time.monotonic() - started)
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code == 201:
                self.acknowledged.append((kwargs["json"]["email"], response.cookies["session"]))  # type: ignore[index]
        return response.status_code

    def _run(self, loader: int) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
            for n in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
                node = self.nodes[n % 2]
                body = {"email": f"load{loader}-{n}@example.com", "password": PASSWORD}
                self._send(client, "POST", node.url + "/api/register", json=body)
                if self.acknowledged:
                    token = self.acknowledged[-1][1]
                    other = self.nodes[(n + 1) % 2]
                    cookie = {"Cookie": f"session={token}"}
                    self._send(client, "GET", other.url + "/api/me", headers=cookie)

    def wait_for_acknowledged(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.acknowledged)
        while len(self.acknowledged) < start + count:
            assert time.monotonic() < deadline, f"load stalled: {self.statuses}, {self.errors[:3]}"
            time.sleep(0.05)


def wait_healthy(node: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(node.url + "/healthz", timeout=REQUEST_TIMEOUT).status_code != 200:
        assert time.monotonic() < deadline, f"{node.url} did not recover"
        time.sleep(0.2)


def check_down(nodes: list[Server], token: str) -> None:
    """While the database is down every database-backed answer is a prompt, clean 503."""
    cookie = {"Cookie": f"session={token}"}
    login = {"email": "nobody@example.com", "password": PASSWORD}
    for node in nodes:
        health = httpx.get(node.url + "/healthz", timeout=REQUEST_TIMEOUT)
        assert (health.status_code, health.json()) == (
            503,
            {"status": "unavailable", "engine": "postgresql"},
        )
        me = httpx.get(node.url + "/api/me", headers=cookie, timeout=REQUEST_TIMEOUT)
        assert (me.status_code, me.json()["error"]) == (503, "unavailable")
        page = httpx.get(node.url + "/protected", headers=cookie, timeout=REQUEST_TIMEOUT)
        assert page.status_code == 503 and "text/html" in page.headers["Content-Type"]
        signin = httpx.post(node.url + "/api/login", json=login, timeout=REQUEST_TIMEOUT)
        assert (signin.status_code, signin.json()["error"]) == (503, "unavailable")


async def stored_emails(url: str) -> set[str]:
    db = await asyncpg.connect(url)
    try:
        return {row["email"] for row in await db.fetch("SELECT email FROM users")}
    finally:
        await db.close()


def test_database_outage_gives_503s_and_nodes_recover_without_losing_writes(
    tmp_path: Path, cluster: pgcluster.Cluster
) -> None:
    name = on_own_loop(pgcluster.create_database(cluster.dsn()))
    url = pgcluster.database_url(cluster.dsn(), str(name))
    env = {"QUART_DATABASE_URL": url, "QUART_THROTTLE_ENABLED": "false"}
    with running(tmp_path, env, workers=1) as a, running(tmp_path, env, workers=1) as b:
        nodes = [a, b]
        with Load(nodes) as load:
            load.wait_for_acknowledged(20)
            cluster.stop("immediate")  # like a crash: no shutdown checkpoint
            before_stop = list(load.acknowledged)
            check_down(nodes, before_stop[0][1])
            time.sleep(DOWN_FOR)
            assert load.statuses[503] > 0
            cluster.start()
            for node in nodes:
                wait_healthy(node)
            load.wait_for_acknowledged(20)
        assert all(node.process.poll() is None for node in nodes)  # recovered, not restarted
        for node in nodes:
            for _, token in before_stop[:: max(1, len(before_stop) // 10)]:
                me = httpx.get(
                    node.url + "/api/me",
                    headers={"Cookie": f"session={token}"},
                    timeout=REQUEST_TIMEOUT,
                )
                assert me.status_code == 200
    assert load.errors == []
    assert set(load.statuses) <= {200, 201, 503}, load.statuses
    assert load.slowest < REQUEST_TIMEOUT
    stored = on_own_loop(stored_emails(url))
    assert {email for email, _ in load.acknowledged} <= stored  # type: ignore[operator]
