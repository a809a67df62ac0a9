"""The fault drill of issue #16: three real nodes on one real PostgreSQL behind HAProxy with
deploy/haproxy/quart-auth.cfg, over TLS, under bounded load (wrk GET /protected in rounds,
and a burst of sign-ups through the balancer per fault).

Faults, one test each, in this order: a node killed (SIGKILL to every process of it), a node
hung (SIGSTOP), a rolling restart of every node (SIGTERM: drain, then start again), and a
PostgreSQL restart. Targets: no failed GET, no 5xx (nor dropped connection) on a sign-up,
every acknowledged sign-up stored and signable, the hung node out of rotation within 3 s.
The figures go to test-artifacts/drill.json (and stdout with -s) for docs/DEPLOY.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pgcluster
import pytest
from drill import (
    PASSWORD,
    HAProxy,
    Load,
    gone_within,
    group_members,
    haproxy,
    nginx,
    port_free,
    render_nginx_site,
    trusting,
)
from servers import Server, free_port, start
from smtp import make_certificate

pytestmark = [pytest.mark.postgres, pytest.mark.integration, pytest.mark.slow]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACT = ROOT / "test-artifacts" / "drill.json"
NODES = 3
DRAIN_DELAY = "2"  # seconds: HAProxy's inter + fastinter + 2 x timeout check, rounded up
HUNG_OUT_WITHIN = 3.0
SIGN_UPS = 30
SIGN_OUTS = 1000
PG_DOWN = 2.0  # seconds PostgreSQL stays stopped; the nodes wait up to QUART_DATABASE_WAIT (5)
FIGURES: dict[str, dict[str, Any]] = {}


def on_own_loop(work: Coroutine[Any, Any, T]) -> T:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


@dataclass
class Site:
    cluster: pgcluster.Cluster
    database_url: str
    tmp: Path
    env: dict[str, str]
    nodes: list[Server]
    proxy: HAProxy
    ca: Path
    cookie: str

    def start_node(self, index: int, port: int) -> Server:
        server = start(
            self.tmp, self.env, workers=1, port=port, args=("--drain-delay", DRAIN_DELAY)
        )
        self.nodes[index] = server
        return server

    def emails(self, fault: str) -> list[str]:
        return [f"{fault}-{n}@example.com" for n in range(SIGN_UPS)]


def require_tools() -> None:
    missing = [tool for tool in ("haproxy", "wrk", "openssl") if shutil.which(tool) is None]
    if pgcluster.bindir() is None:
        missing.append("postgresql")
    if missing:
        pytest.skip(f"the drill needs {', '.join(missing)} (scripts/setup --test installs them)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """PostgreSQL, three nodes (a launcher and one worker each) and HAProxy in front."""
    require_tools()
    tmp = tmp_path_factory.mktemp("drill")
    certificate = make_certificate(tmp)
    pem = tmp / "haproxy.pem"
    pem.write_text(certificate.cert.read_text() + certificate.key.read_text())
    cluster = pgcluster.Cluster()
    nodes: list[Server] = []
    try:
        cluster.start()
        name = on_own_loop(pgcluster.create_database(cluster.dsn()))
        url = pgcluster.database_url(cluster.dsn(), name)
        port = free_port()
        env = {
            "QUART_DATABASE_URL": url,
            "QUART_DATABASE_POOL_SIZE": "4",
            "QUART_SECRET_KEY": "drill secret, the same on every node",
            "QUART_TRUSTED_PROXY_HOPS": "1",
            "QUART_PUBLIC_URL": f"https://localhost:{port}",
            "QUART_MAIL_OUTBOX_DIR": str(tmp / "outbox"),
            "QUART_THROTTLE_SIGNUPS_PER_ADDRESS": "100000",  # every sign-up comes from loopback
            "QUART_BCRYPT_THREADS": "1",
            "QUART_DATABASE_WAIT": "5",  # as docs/DEPLOY.md recommends behind a balancer
        }
        site = Site(cluster, url, tmp, env, [], None, certificate.cert, "")  # type: ignore[arg-type]
        site.nodes = [None] * NODES  # type: ignore[list-item]
        for index in range(NODES):
            site.start_node(index, free_port())
        nodes = site.nodes
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        with haproxy(tmp, addresses, pem, port, free_port()) as proxy:
            site.proxy = proxy
            site.cookie = sign_up_cookie(proxy.url, certificate.cert)
            yield site
    finally:
        for node in nodes:
            if node is not None and node.process.poll() is None:
                node.kill()
        cluster.close()
        if FIGURES:
            ARTIFACT.parent.mkdir(exist_ok=True)
            ARTIFACT.write_text(json.dumps(FIGURES, indent=2) + "\n")
            print("\ndrill figures:", json.dumps(FIGURES, indent=2))


def sign_up_cookie(url: str, ca: Path) -> str:
    """A session (name=value) for wrk: a sign-up through the balancer."""
    body = {"email": "wrk@example.com", "password": PASSWORD}
    response = httpx.post(f"{url}/api/register", json=body, verify=trusting(ca), timeout=30)
    assert response.status_code == 201, response.text
    for header in response.headers.get_list("set-cookie"):
        name_value = header.split(";", 1)[0]
        if name_value.split("=", 1)[0].endswith("session"):
            return name_value
    raise AssertionError(f"no session cookie in {response.headers}")


async def unsignable(url: str, ca: Path, emails: list[str]) -> list[str]:
    """The emails whose password does not sign in through the balancer."""
    async with httpx.AsyncClient(base_url=url, verify=trusting(ca), timeout=30) as http:
        answers = await asyncio.gather(
            *(http.post("/api/login", json={"email": e, "password": PASSWORD}) for e in emails)
        )
    return [e for e, r in zip(emails, answers, strict=True) if r.status_code != 200]


async def stored(database_url: str, emails: list[str]) -> set[str]:
    db = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await db.fetch("SELECT email FROM users WHERE email = ANY($1::text[])", emails)
    finally:
        await db.close()
    return {row["email"] for row in rows}


def check(site: Site, fault: str, load: Load, log_from: int, **extra: Any) -> None:
    """Record the fault's figures, then assert the targets (each can fail)."""
    wrk, burst = load.wrk, load.burst
    acknowledged = burst.acknowledged
    retried, answered_5xx = site.proxy.answered_since(log_from)
    figures = {
        "get_requests": wrk.requests,
        "get_seconds": round(wrk.seconds, 1),
        "get_failed": wrk.failed,
        "get_socket_errors": wrk.socket_errors,
        "get_non_2xx": wrk.non_2xx,
        "sign_ups": SIGN_UPS,
        "sign_up_statuses": {str(k): v for k, v in sorted(burst.statuses.items())},
        "sign_up_errors": len(burst.errors),
        "sign_up_slowest_s": round(burst.slowest, 2),
        "haproxy_retried": retried,
        "haproxy_answered_5xx": answered_5xx,
        **extra,
    }
    FIGURES[fault] = figures
    print(f"\n{fault}: {json.dumps(figures)}")
    assert wrk.rounds > 0 and wrk.requests > 0
    assert wrk.failed == 0, wrk.outputs
    assert burst.errors == []
    assert burst.server_errors == 0, burst.statuses
    assert set(burst.statuses) <= {200, 201}, burst.statuses
    assert len(acknowledged) == SIGN_UPS
    assert answered_5xx == 0
    assert on_own_loop(stored(site.database_url, acknowledged)) == set(acknowledged)
    assert on_own_loop(unsignable(site.proxy.url, site.ca, acknowledged)) == []


def wait_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def test_haproxy_forwards_honestly_and_answers_json_for_the_api(site: Site) -> None:
    """Through deploy/haproxy/quart-auth.cfg: a forged X-Forwarded-For reaches no node, Host
    keeps its port, no Server header; with no node in rotation, HAProxy's own 503 is JSON
    on /api/ and a page elsewhere."""
    url, forged = site.proxy.url, {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=1.2.3.4"}
    with httpx.Client(base_url=url, verify=trusting(site.ca), timeout=30) as http:
        origin = {"Origin": url, **forged}
        body = {"email": "haproxy@example.com", "password": PASSWORD}
        created = http.post("/api/register", json=body, headers=origin)
        assert created.status_code == 201, created.text  # not 403: the port reached Host
        sessions = http.get("/api/sessions", headers=forged)
        assert [s["ip"] for s in sessions.json()["sessions"]] == ["127.0.0.1"]
        assert "Server" not in sessions.headers
        assert sessions.headers["Strict-Transport-Security"] == "max-age=31536000"
        for node in range(1, NODES + 1):
            site.proxy.command(f"disable server quart_auth_api/node{node}")
        try:
            api, page = http.get("/api/me"), http.get("/login")
        finally:
            for node in range(1, NODES + 1):
                site.proxy.command(f"enable server quart_auth_api/node{node}")
        insecure = httpx.get(f"http://127.0.0.1:{site.proxy.http_port}/login?next=/account")
    assert (insecure.status_code, insecure.headers["Location"]) == (
        301,
        f"https://127.0.0.1:{site.proxy.http_port}/login?next=/account",
    )
    assert (api.status_code, api.headers["Content-Type"]) == (503, "application/json")
    assert api.json()["error"] == "unavailable"
    assert page.status_code == 503 and page.headers["Content-Type"].startswith("text/html")
    for node in range(1, NODES + 1):
        site.proxy.wait_for(f"node{node}", "UP", within=10)


def test_a_node_killed_with_all_its_processes(site: Site) -> None:
    victim = site.nodes[0]
    pgid = victim.process.pid
    # The launcher, its worker and multiprocessing's resource tracker (Hypercorn spawns).
    assert len(group_members(pgid)) >= 2
    log_from = site.proxy.log_size()
    with Load(site.proxy.url, site.ca, site.cookie, site.emails("killed")) as load:
        began = time.monotonic()
        time.sleep(1.0)
        victim.kill(signal.SIGKILL)  # the whole process group, as KillMode=control-group does
        left = gone_within(pgid, 5.0)  # a killed worker may still be freeing its memory
        port_released = port_free(victim.port)
        out = site.proxy.wait_for("node1", "DOWN", within=10)
        wait_until(began + 5.0)
    restarted = site.start_node(0, victim.port)  # the same port: nothing holds it
    back = site.proxy.wait_for("node1", "UP", within=15)
    assert restarted.process.poll() is None
    assert left == []
    assert port_released
    check(
        site,
        "node_sigkill",
        load,
        log_from,
        out_of_rotation_s=round(out, 2),
        back_up_s=round(back, 2),
    )


def test_a_hung_node_is_out_of_rotation_within_3_s(site: Site) -> None:
    victim = site.nodes[1]
    log_from = site.proxy.log_size()
    with Load(site.proxy.url, site.ca, site.cookie, site.emails("hung")) as load:
        began = time.monotonic()
        time.sleep(1.0)
        os.killpg(victim.process.pid, signal.SIGSTOP)  # every process of the node stops
        try:
            out = site.proxy.wait_for("node2", "DOWN", within=10)
            wait_until(began + 6.0)
        except BaseException:
            os.killpg(victim.process.pid, signal.SIGCONT)
            raise
    os.killpg(victim.process.pid, signal.SIGCONT)
    back = site.proxy.wait_for("node2", "UP", within=15)
    check(
        site,
        "node_sigstop",
        load,
        log_from,
        out_of_rotation_s=round(out, 2),
        back_up_s=round(back, 2),
    )
    assert out <= HUNG_OUT_WITHIN


def test_a_rolling_restart_of_every_node(site: Site) -> None:
    steps = []
    emails = site.emails("rolling")
    log_from = site.proxy.log_size()
    with Load(site.proxy.url, site.ca, site.cookie, emails, spread=15.0, max_rounds=15) as load:
        time.sleep(1.0)
        for index in range(NODES):
            node = site.nodes[index]
            began = time.monotonic()
            os.killpg(node.process.pid, signal.SIGTERM)  # as systemd stops a unit
            out = site.proxy.wait_for(f"node{index + 1}", "DOWN", within=10)
            status = node.process.wait(timeout=30)
            stopped = time.monotonic() - began
            site.start_node(index, node.port)
            up = site.proxy.wait_for(f"node{index + 1}", "UP", within=15)
            steps.append(
                {
                    "out_of_rotation_s": round(out, 2),
                    "exited_after_s": round(stopped, 2),
                    "exit_status": status,
                    "back_up_s": round(time.monotonic() - began, 2),
                    "up_wait_s": round(up, 2),
                }
            )
    check(site, "rolling_restart", load, log_from, steps=steps)
    assert [step["exit_status"] for step in steps] == [0] * NODES


def test_a_postgresql_restart(site: Site) -> None:
    log_from = site.proxy.log_size()
    with Load(site.proxy.url, site.ca, site.cookie, site.emails("pg")) as load:
        began = time.monotonic()
        time.sleep(1.0)
        down = time.monotonic()
        site.cluster.stop("fast")  # what `systemctl restart postgresql` does, held down a while
        time.sleep(PG_DOWN)
        site.cluster.start()
        outage = time.monotonic() - down
        wait_until(began + 6.0)
    check(site, "postgresql_restart", load, log_from, outage_s=round(outage, 2))


async def sign_outs_while_stopping(url: str, site: Site, node: Server) -> Counter[int]:
    """SIGN_OUTS sign-outs through nginx over 4 s, 16 at a time; `node` gets SIGTERM 0.5 s
    in (it drains 2 s, then closes: nginx has no check to notice it sooner)."""
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(16)

    async def one(http: httpx.AsyncClient, index: int) -> None:
        await asyncio.sleep(4.0 * index / SIGN_OUTS)
        async with gate:
            response = await http.post("/api/logout", json={}, headers={"Origin": url})
            statuses[response.status_code] += 1

    async def stop() -> None:
        await asyncio.sleep(0.5)
        os.killpg(node.process.pid, signal.SIGTERM)

    async with httpx.AsyncClient(base_url=url, verify=trusting(site.ca), timeout=30) as http:
        async with asyncio.timeout(60):
            await asyncio.gather(stop(), *(one(http, i) for i in range(SIGN_OUTS)))
    assert await asyncio.to_thread(node.process.wait, 30) == 0
    return statuses


def test_the_nginx_alternative_forwards_honestly_and_answers_json_for_the_api(
    site: Site,
) -> None:
    """deploy/nginx/quart-auth.conf on nginx 1.22: it loads (`nginx -t`), Host keeps its port
    (no 403 cross-origin on a non-443 port), a forged X-Forwarded-For reaches no node,
    no version header, a node stopped (SIGTERM) under sign-outs costs none of them a 502
    (nginx may replay a sign-out), and nginx's own errors on /api/ are JSON."""
    if shutil.which("nginx") is None:
        pytest.skip("the nginx test needs nginx (scripts/setup --test installs it)")
    nodes = [f"127.0.0.1:{node.port}" for node in site.nodes]
    port, http_port = free_port(), free_port()
    key = site.ca.with_name("key.pem")
    rendered = render_nginx_site(nodes, port, http_port, site.ca, key)
    url, forged = f"https://127.0.0.1:{port}", {"X-Forwarded-For": "203.0.113.9"}
    with (
        nginx(site.tmp / "nginx", rendered, port),
        httpx.Client(base_url=url, verify=trusting(site.ca), timeout=30) as http,
    ):
        origin = {"Origin": f"https://127.0.0.1:{port}", **forged}
        body = {"email": "nginx@example.com", "password": PASSWORD}
        created = http.post("/api/register", json=body, headers=origin)
        assert created.status_code == 201, created.text  # not 403: the port reached Host
        sessions = http.get("/api/sessions", headers=forged).json()["sessions"]
        assert [s["ip"] for s in sessions] == ["127.0.0.1"]
        ready = http.get("/readyz", headers=forged)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert ready.headers["Server"] == "nginx"  # no version
        redirect = httpx.get(f"http://127.0.0.1:{http_port}/login", timeout=10)
        assert redirect.status_code == 301
        assert redirect.headers["Location"] == "https://127.0.0.1/login"
        sign_outs = on_own_loop(sign_outs_while_stopping(url, site, site.nodes[2]))
    FIGURES["nginx_sigterm_sign_outs"] = {str(k): v for k, v in sorted(sign_outs.items())}
    print(f"\nnginx, a node SIGTERMed under POST /api/logout: {sign_outs}")
    assert sign_outs == Counter({204: SIGN_OUTS})
    dead = [f"127.0.0.1:{free_port()}" for _ in nodes]  # nothing listens there
    port = free_port()
    rendered = render_nginx_site(dead, port, free_port(), site.ca, key)
    with (
        nginx(site.tmp / "nginx-dead", rendered, port),
        httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trusting(site.ca)) as http,
    ):
        api = http.get("/api/me")
        page = http.get("/login")
    assert api.status_code == 502
    assert api.headers["Content-Type"] == "application/json"
    assert api.json()["error"] == "unavailable"
    assert page.status_code == 502 and page.headers["Content-Type"].startswith("text/html")


async def test_requests_wait_for_a_restarting_database_and_checks_never_do(site: Site) -> None:
    """QUART_DATABASE_WAIT: a store call keeps trying a database that refuses connections,
    for that long at most; the health and readiness queries answer at once."""
    from quart_auth_app.store import StoreUnavailable
    from quart_auth_app.store.postgres import PostgresStore

    waiting = PostgresStore(site.database_url, pool_size=1, wait=4.0)
    prompt = PostgresStore(site.database_url, pool_size=1)
    try:
        await waiting.open()
        await prompt.open()
        await asyncio.to_thread(site.cluster.stop, "fast")
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(StoreUnavailable):
            await waiting.ping()  # a health check: no wait
        with pytest.raises(StoreUnavailable):
            await prompt.fetch_one("SELECT 1")  # DATABASE_WAIT 0, the default: no wait
        assert loop.time() - began < 1.0
        loop.call_later(1.0, site.cluster.start)  # back in a second (blocks the loop briefly)
        row = await waiting.fetch_one("SELECT 41 + 1")
        assert row is not None and row[0] == 42
        assert loop.time() - began >= 1.0
    finally:
        if not (site.cluster.data / "postmaster.pid").exists():
            site.cluster.start()
        await waiting.close()
        await prompt.close()


def test_a_draining_node_closes_each_connection_with_its_answer(tmp_path: Path) -> None:
    """On SIGTERM, through the drain delay, answers still come, each with `Connection:
    close`, and the node closes the connection itself after it: no keep-alive client is
    left holding an idle connection that the shutdown then closes under its next request."""
    env = {"QUART_DATABASE": str(tmp_path / "app.sqlite3")}
    node = start(tmp_path, env, workers=1, args=("--drain-delay", "2"))
    try:
        with httpx.Client(base_url=node.url, timeout=10) as http:
            before = http.get("/readyz")
            os.killpg(node.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 2
            during = http.get("/readyz")
            while during.status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.05)
                during = http.get("/readyz")
            page = http.get("/login")  # a new connection: the last one was closed
        assert before.headers.get("Connection") is None
        assert (during.status_code, during.json()) == (503, {"status": "draining"})
        assert during.headers["Connection"] == "close"
        assert (page.status_code, page.headers["Connection"]) == (200, "close")
        assert node.process.wait(timeout=30) == 0
    finally:
        node.kill()
    assert "Traceback" not in node.log_text()


def test_the_systemd_unit_stops_every_process_and_outlasts_the_drain() -> None:
    """deploy/systemd/quart-auth@.service: the whole control group is signalled, the node
    comes back, and the stop timeout covers the drain delay plus Hypercorn's graceful
    timeout; `systemd-analyze verify` accepts it where systemd is installed."""
    unit = ROOT / "deploy" / "systemd" / "quart-auth@.service"
    text = unit.read_text()
    settings = dict(
        line.split("=", 1) for line in text.replace("\\\n", " ").splitlines() if "=" in line
    )
    assert settings["KillMode"] == "control-group"
    assert settings["Restart"] == "always"
    drain = float(settings["ExecStart"].split("--drain-delay")[1].split()[0])
    assert drain == float(DRAIN_DELAY)
    graceful = float(tomllib.loads((ROOT / "hypercorn.toml").read_text())["graceful_timeout"])
    assert float(settings["TimeoutStopSec"]) > drain + graceful
    if shutil.which("systemd-analyze"):
        # The unit as installed, but with this checkout's interpreter (the one path it
        # names that exists nowhere here).
        local = text.replace("/srv/quart_auth_app/.venv/bin/python", sys.executable)
        with tempfile.TemporaryDirectory() as folder:
            here = Path(folder) / "quart-auth@5000.service"
            here.write_text(local)
            verified = subprocess.run(
                ["systemd-analyze", "verify", str(here)], capture_output=True, text=True
            )
        assert verified.returncode == 0, verified.stderr


def test_killing_the_launcher_alone_leaves_its_worker_serving(tmp_path: Path) -> None:
    """Why a node is stopped or killed as a process group (KillMode=control-group): the
    launcher's workers are processes of their own and outlive a SIGKILL to it."""
    node = start(tmp_path, {"QUART_DATABASE": str(tmp_path / "app.sqlite3")}, workers=1)
    try:
        members = group_members(node.process.pid)
        os.kill(node.process.pid, signal.SIGKILL)  # the launcher's PID only
        node.process.wait(timeout=10)
        orphan = httpx.get(f"{node.url}/healthz", timeout=10)
        assert orphan.status_code == 200
        assert group_members(node.process.pid) == [p for p in members if p != node.process.pid]
    finally:
        os.killpg(node.process.pid, signal.SIGKILL)  # the group: every process goes
    assert gone_within(node.process.pid, 5.0) == []  # (once it has freed its memory)
    assert port_free(node.port)
