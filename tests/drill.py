"""The fault drill's parts (tests/test_drill.py): HAProxy with deploy/haproxy/quart-auth.cfg
in front of real nodes, its stats socket, wrk in rounds and sign-up bursts as load.

Everything started here is stopped by its own PID; every load loop is bounded in count and
in time.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "quart-auth.cfg"
PASSWORD = "correct horse battery staple"
# The drill's own `global` section: what Debian's /etc/haproxy/haproxy.cfg gives in
# production (a stats socket), without the chroot and user switch a test cannot make.
GLOBAL = """global
    stats socket {socket} mode 600 level admin
    nbthread 1
    log stdout format raw local0 info
"""
WRK_TOTALS = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")
WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
# An `option httplog` line: ... backend/server Tq/Tw/Tc/Tr/Ta status bytes ... flags
# actconn/feconn/beconn/srv_conn/retries (a "+" when redispatched) ... "request line".
HTTPLOG = re.compile(
    r" \S+/\S+ [-\d]+/[-\d]+/[-\d]+/[-\d]+/\+?\d+ (\d{3}) .* \d+/\d+/\d+/\d+/\+?(\d+) "
)


@dataclass
class HAProxy:
    process: subprocess.Popen[bytes]
    port: int
    http_port: int
    socket: Path
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def command(self, line: str) -> str:
        """One command on the stats socket; its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def statuses(self, backend: str = "quart_auth_api") -> dict[str, str]:
        """Each server of `backend` and its state: UP, DOWN, "UP 1/2" (going down)..."""
        text = self.command("show stat").lstrip("# ")
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for(self, server: str, state: str, within: float) -> float:
        """Seconds until `server` is exactly `state` (polled every 20 ms); fails past `within`."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            if self.statuses().get(server) == state:
                return time.monotonic() - started
            time.sleep(0.02)
        raise AssertionError(f"{server} not {state} within {within} s: {self.statuses()}")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def answered_since(self, offset: int) -> tuple[int, int]:
        """From the log since `offset`: requests HAProxy retried, and 5xx it answered."""
        with self.log.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
        retried = failed = 0
        for line in lines:
            match = HTTPLOG.search(line)
            if match:
                retried += int(match[2]) > 0
                failed += int(match[1]) >= 500
        return retried, failed

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # our own PID only
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def haproxy(
    tmp_path: Path, nodes: list[str], pem: Path, port: int, http_port: int
) -> Iterator[HAProxy]:
    """HAProxy with the deploy/ configuration on loopback, the nodes at `nodes` (host:port)."""
    sock = tmp_path / "haproxy.sock"
    global_cfg = tmp_path / "haproxy-global.cfg"
    global_cfg.write_text(GLOBAL.format(socket=sock))
    env = {
        **os.environ,
        "QUART_AUTH_HTTPS": f"127.0.0.1:{port}",
        "QUART_AUTH_HTTP": f"127.0.0.1:{http_port}",
        "QUART_AUTH_CERT": str(pem),
        **{f"QUART_AUTH_NODE{i}": node for i, node in enumerate(nodes, 1)},
    }
    command = ["haproxy", "-c", "-f", str(global_cfg), "-f", str(HAPROXY_CONFIG)]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=30)
    log = tmp_path / "haproxy.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(global_cfg), "-f", str(HAPROXY_CONFIG)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proxy = HAProxy(process, port, http_port, sock, log)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for node in range(1, len(nodes) + 1):
            proxy.wait_for(f"node{node}", "UP", within=max(0.5, deadline - time.monotonic()))
        yield proxy
    finally:
        proxy.stop()


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    socket_errors: int = 0
    non_2xx: int = 0
    rounds: int = 0
    outputs: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.socket_errors + self.non_2xx

    def add(self, output: str) -> None:
        totals = WRK_TOTALS.search(output)
        if totals is None:
            raise AssertionError(f"wrk printed no totals:\n{output}")
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0}.get(totals[3], 1.0)
        self.requests += int(totals[1])
        self.seconds += float(totals[2]) * scale
        errors = WRK_SOCKET.search(output)
        self.socket_errors += sum(map(int, errors.groups())) if errors else 0
        non_2xx = WRK_NON_2XX.search(output)
        self.non_2xx += int(non_2xx[1]) if non_2xx else 0
        self.rounds += 1
        self.outputs.append(output)


def wrk(url: str, cookie: str, seconds: int, connections: int = 16, timeout: int = 10) -> str:
    """One wrk run (one thread) of GET `url` with the session cookie; its output."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s",
        "-H", f"Cookie: {cookie}", url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout + 30)
    return done.stdout + done.stderr


def trusting(ca: Path) -> ssl.SSLContext:
    """A client's TLS context trusting the drill's self-signed certificate."""
    return ssl.create_default_context(cafile=str(ca))


@dataclass
class Burst:
    """Outcomes of the sign-ups sent through the balancer."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # emails answered 201 or 200
    slowest: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500) + len(self.errors)


async def sign_ups(
    url: str, ca: Path, emails: list[str], spread: float, concurrency: int = 6
) -> Burst:
    """Sign up every email through the balancer, started evenly over `spread` seconds."""
    burst = Burst()
    gate = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, index: int, email: str) -> None:
        await asyncio.sleep(spread * index / len(emails))
        async with gate:
            started = time.monotonic()
            try:
                response = await http.post(
                    "/api/register", json={"email": email, "password": PASSWORD}
                )
            except httpx.HTTPError as exc:
                burst.errors.append(f"{email}: {exc!r}")
                return
            finally:
                burst.slowest = max(burst.slowest, time.monotonic() - started)
            burst.statuses[response.status_code] += 1
            if response.status_code in (200, 201):
                burst.acknowledged.append(email)

    async with httpx.AsyncClient(base_url=url, verify=trusting(ca), timeout=60) as http:
        async with asyncio.timeout(spread + 120):
            await asyncio.gather(*(one(http, i, e) for i, e in enumerate(emails)))
    return burst


class Load:
    """While the block runs: wrk rounds of GET /protected, and one burst of sign-ups spread
    over the first `spread` seconds. Bounded: at most `max_rounds` wrk rounds."""

    def __init__(
        self,
        url: str,
        ca: Path,
        cookie: str,
        emails: list[str],
        spread: float = 3.0,
        round_seconds: int = 3,
        max_rounds: int = 12,
    ) -> None:
        self.url, self.ca, self.cookie = url, ca, cookie
        self.emails, self.spread = emails, spread
        self.round_seconds, self.max_rounds = round_seconds, max_rounds
        self.wrk = WrkResult()
        self.burst = Burst()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._get_rounds),
            threading.Thread(target=self._sign_ups),
        ]

    def _get_rounds(self) -> None:
        while not self.stop.is_set() and self.wrk.rounds < self.max_rounds:
            self.wrk.add(wrk(f"{self.url}/protected", self.cookie, self.round_seconds))

    def _sign_ups(self) -> None:
        self.burst = asyncio.run(sign_ups(self.url, self.ca, self.emails, self.spread))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=180)


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by `pid`: the launcher and all its workers."""
    os.killpg(pid, sig)


def gone_within(pgid: int, seconds: float) -> list[int]:
    """The members of process group `pgid` still there after at most `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def group_members(pgid: int) -> list[int]:
    """PIDs still in process group `pgid` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":  # a zombie serves nothing
                members.append(int(entry.name))
    return members


def port_free(port: int, within: float = 2.0) -> bool:
    """Whether nothing accepts connections on 127.0.0.1:`port` any more, within `within` s
    (a killed process's sockets close as the kernel reaps it)."""
    deadline = time.monotonic() + within
    while True:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


NGINX_SITE = ROOT / "deploy" / "nginx" / "quart-auth.conf"
# What Debian's /etc/nginx/nginx.conf gives the site file, in a test's own directory.
NGINX_MAIN = """daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    include {site};
}}
"""


def render_nginx_site(nodes: list[str], port: int, http_port: int, cert: Path, key: Path) -> str:
    """deploy/nginx/quart-auth.conf with loopback addresses, ports and the test's
    certificate in place of the production ones; every swap must find its text once."""
    text = NGINX_SITE.read_text()
    swaps = {
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{port} ssl http2;",
        "listen [::]:443 ssl http2;": "",
        "/etc/letsencrypt/live/auth.example.com/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/auth.example.com/privkey.pem": str(key),
        **{f"10.0.0.1{i}:5000": node for i, node in enumerate(nodes, 1)},
    }
    for old, new in swaps.items():
        if text.count(old) != 1:
            raise AssertionError(f"{NGINX_SITE} no longer has {old!r} exactly once")
        text = text.replace(old, new)
    return text


@contextmanager
def nginx(tmp_path: Path, site: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nginx (`nginx -t` first) serving `site` on loopback; stopped by its PID."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "quart-auth.conf").write_text(site)
    main = tmp_path / "nginx.conf"
    main.write_text(NGINX_MAIN.format(tmp=tmp_path, site=tmp_path / "quart-auth.conf"))
    checked = subprocess.run(
        ["nginx", "-t", "-c", str(main)], capture_output=True, text=True, timeout=30
    )
    if checked.returncode != 0:
        raise AssertionError(f"nginx -t failed:\n{checked.stderr}")
    with (tmp_path / "nginx-stderr.log").open("ab") as err:
        process = subprocess.Popen(
            ["nginx", "-c", str(main)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 10
        while port_free(port, within=0) and time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError((tmp_path / "nginx-error.log").read_text())
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()  # nginx's master stops its workers on SIGTERM
            process.wait(timeout=10)
