"""GET /metrics (SPEC §13): what is counted, who may read it, and every worker in one scrape."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart
from quart.testing import QuartClient
from servers import Server, client, running

from quart_auth_app import create_app, metrics
from quart_auth_app.mail.transport import MailError
from quart_auth_app.services import services
from quart_auth_app.store import Outgoing, StoreUnavailable, User
from quart_auth_app.testing import create_user, enable_totp

PASSWORD = "correct horse battery staple"
LOCAL = {"client": ("127.0.0.1", 40000)}
REMOTE = {"client": ("203.0.113.9", 40000)}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(http: QuartClient) -> Samples:
    response = await http.get("/metrics", scope_base=LOCAL)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return parse((await response.get_data()).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def sign_ins(samples: Samples, outcome: str) -> float:
    return value(samples, "quart_auth_app_sign_ins_total", outcome=outcome)


async def test_requests_are_counted_by_route_never_by_raw_path(client: QuartClient) -> None:
    before = await scrape(client)
    for token in ("first-secret-token", "second-secret-token"):
        await client.get(f"/password/reset/{token}")
    await client.get("/no-such-page-xyz")
    response = await client.get("/metrics", scope_base=LOCAL)
    text = (await response.get_data()).decode()
    after = parse(text)
    reset = {"route": "/password/reset/<token>", "method": "GET"}
    requests = "quart_auth_app_requests_total"
    assert (
        value(after, requests, **reset, status="400")  # no such link: answered at once
        - value(before, requests, **reset, status="400")
        == 2
    )
    count = "quart_auth_app_request_duration_seconds_count"
    assert value(after, count, **reset) - value(before, count, **reset) == 2
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(after, requests, **unmatched) - value(before, requests, **unmatched) == 1
    assert "secret-token" not in text
    assert "no-such-page" not in text


async def test_a_made_up_method_is_counted_as_other(client: QuartClient) -> None:
    before = await scrape(client)
    await client.open("/login", method="BREW")
    after = await scrape(client)
    labels = {"route": "unmatched", "method": "OTHER", "status": "405"}
    name = "quart_auth_app_requests_total"
    assert value(after, name, **labels) - value(before, name, **labels) == 1


async def test_sign_in_outcomes(app: Quart, client: QuartClient, user: User) -> None:
    before = await scrape(client)
    wrong = await client.post("/api/login", json={"email": user.email, "password": "nope-nope"})
    assert wrong.status_code == 401
    right = await client.post("/api/login", json={"email": user.email, "password": PASSWORD})
    assert right.status_code == 200
    await enable_totp(app, user)
    fresh = app.test_client()
    pending = await fresh.post("/api/login", json={"email": user.email, "password": PASSWORD})
    assert (await pending.get_json())["second_factor_required"] is True
    code = await fresh.post("/api/login/second-factor", json={"code": "000000"})
    assert code.status_code == 401
    after = await scrape(client)
    assert sign_ins(after, "failed") - sign_ins(before, "failed") == 2  # a password, a code
    assert sign_ins(after, "ok") - sign_ins(before, "ok") == 1
    assert sign_ins(after, "second_factor") - sign_ins(before, "second_factor") == 1


async def test_throttled_sign_ins_are_counted_and_other_limits_are_not(
    config: dict[str, Any],
) -> None:
    limits = {"THROTTLE_ACCOUNT_FAILURES": 2, "THROTTLE_SIGNUPS_PER_ADDRESS": 1}
    app = create_app({**config, **limits})
    async with app.test_app():
        user = await create_user(app, "ada@example.com", "Ada", PASSWORD)
        await counted_throttles(app.test_client(), user)


async def counted_throttles(client: QuartClient, user: User) -> None:
    before = await scrape(client)
    statuses = [
        (
            await client.post("/api/login", json={"email": user.email, "password": "nope"})
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [401, 401, 429]
    for email in ("one@example.com", "two@example.com"):  # the second sign-up is throttled
        await client.post("/api/register", json={"email": email, "password": PASSWORD})
    after = await scrape(client)
    assert sign_ins(after, "throttled") - sign_ins(before, "throttled") == 1
    assert sign_ins(after, "failed") - sign_ins(before, "failed") == 2
    name = "quart_auth_app_sign_ups_total"
    assert value(after, name) - value(before, name) == 1


async def test_bcrypt_runs_are_timed_in_the_queue(client: QuartClient, user: User) -> None:
    before = await scrape(client)
    await asyncio.gather(
        *(
            client.post("/api/login", json={"email": user.email, "password": PASSWORD})
            for _ in range(3)
        )
    )
    after = await scrape(client)
    waits = "quart_auth_app_bcrypt_wait_seconds_count"
    assert value(after, waits) - value(before, waits) == 3
    assert value(after, "quart_auth_app_bcrypt_queue_depth") == 0


async def test_the_queue_depth_counts_waiting_runs_and_forgets_abandoned_ones() -> None:
    release = threading.Event()

    def depth() -> float:
        return metrics.REGISTRY.get_sample_value("quart_auth_app_bcrypt_queue_depth") or 0.0

    start = depth()
    with ThreadPoolExecutor(1) as pool:
        busy = asyncio.create_task(metrics.run_queued(pool, release.wait, 10))
        waiting = asyncio.create_task(metrics.run_queued(pool, time.sleep, 0))
        for _ in range(100):
            if depth() - start == 1:
                break
            await asyncio.sleep(0.01)
        assert depth() - start == 1  # the first took the one thread, the second waits
        waiting.cancel()  # its client hung up: it never runs and leaves the queue
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert depth() == start
        release.set()
        assert await busy is True
    assert depth() == start


class FailingTransport:
    async def send(self, message: EmailMessage) -> None:
        raise MailError("the relay said no")


async def test_mail_failures_and_the_outbox(app: Quart, client: QuartClient) -> None:
    before = await scrape(client)
    services(app).mailer.transport = FailingTransport()  # type: ignore[assignment]
    await client.post("/api/register", json={"email": "bea@example.com", "password": PASSWORD})
    name = "quart_auth_app_mail_failures_total"
    for _ in range(100):
        after = await scrape(client)
        if value(after, name) > value(before, name):
            break
        await asyncio.sleep(0.05)
    assert value(after, name) - value(before, name) == 1
    store = services(app).store
    await store.insert_mail(Outgoing("verify_email", "cy@example.com"), None, 0.0)
    due = value(await scrape(client), "quart_auth_app_mail_outbox_due")
    assert due == await store.count_mail_due() >= 1


async def test_store_errors_are_counted(
    app: Quart, client: QuartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await scrape(client)

    async def down(*args: object) -> None:
        raise StoreUnavailable("gone")

    monkeypatch.setattr(services(app).store, "select_user_by_email", down)
    response = await client.post("/api/login", json={"email": "a@example.com", "password": "x"})
    assert response.status_code == 503
    monkeypatch.setattr(services(app).store, "count_mail_due", down)
    after = await scrape(client)  # the outbox's figure is left out, the scrape still answers
    name = "quart_auth_app_store_errors_total"
    assert value(after, name) - value(before, name) == 2
    assert ("quart_auth_app_mail_outbox_due", frozenset()) not in after


# (extra config, scope, headers) -> status
ACCESS = [
    pytest.param({}, LOCAL, {}, 200, id="loopback"),
    pytest.param({}, LOCAL, {"X-Forwarded-For": "203.0.113.7"}, 404, id="forwarded-untrusted"),
    pytest.param(
        {"TRUSTED_PROXY_HOPS": 1},
        LOCAL,
        {"X-Forwarded-For": "127.0.0.1"},
        404,
        id="proxy-on-loopback-says-loopback",
    ),
    pytest.param(
        {"TRUSTED_PROXY_HOPS": 2},
        LOCAL,
        {"X-Forwarded-For": "203.0.113.7"},
        404,
        id="too-few-hops-keep-the-socket-address",
    ),
    pytest.param({}, LOCAL, {"Forwarded": "for=203.0.113.7"}, 404, id="forwarded-header"),
    pytest.param({}, REMOTE, {}, 404, id="remote-no-token-configured"),
    pytest.param({}, {}, {}, 404, id="no-socket-address"),
    pytest.param({"METRICS_TOKEN": "s3cret"}, REMOTE, {}, 401, id="remote-no-token"),
    pytest.param(
        {"METRICS_TOKEN": "s3cret"},
        REMOTE,
        {"Authorization": "Bearer wrong"},
        401,
        id="remote-wrong-token",
    ),
    pytest.param(
        {"METRICS_TOKEN": "s3cret"},
        REMOTE,
        {"Authorization": "Bearer s3cret"},
        200,
        id="remote-token",
    ),
    pytest.param(
        {"METRICS_TOKEN": "s3cret", "TRUSTED_PROXY_HOPS": 1},
        LOCAL,
        {"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer s3cret"},
        200,
        id="through-a-proxy-with-the-token",
    ),
]


@pytest.mark.parametrize(("extra", "scope", "headers", "status"), ACCESS)
async def test_who_may_read_the_metrics(
    config: dict[str, Any],
    extra: dict[str, Any],
    scope: dict[str, Any],
    headers: dict[str, str],
    status: int,
) -> None:
    app = create_app({**config, **extra})
    async with app.test_app():
        response = await app.test_client().get("/metrics", headers=headers, scope_base=scope)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if status == 200:
        assert b"quart_auth_app_requests_total" in await response.get_data()


async def test_not_in_the_openapi_document(client: QuartClient) -> None:
    paths = (await (await client.get("/openapi.json")).get_json())["paths"]
    assert "/metrics" not in paths
    assert "/readyz" not in paths


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    """The launcher with two workers; its temporary directory, to see what it leaves."""
    env = {
        "QUART_DATABASE": str(tmp_path / "app.sqlite3"),
        "QUART_THROTTLE_ENABLED": "false",
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir()
    with running(tmp_path, env) as server:
        yield server


@pytest.mark.integration
async def test_one_scrape_sums_every_workers_counts(served: Server, tmp_path: Path) -> None:
    [metrics_dir] = (tmp_path / "tmp").iterdir()  # the launcher's, private
    assert metrics_dir.stat().st_mode & 0o777 == 0o700
    async with client(served, fresh_connections=True) as http:
        for _ in range(20):  # until both workers have answered some
            await asyncio.gather(*(http.get("/healthz") for _ in range(20)))
            answered = [a for a in served.accesses() if a.path == "/healthz"]
            if len({a.pid for a in answered}) == 2:
                break
        assert len({a.pid for a in answered}) == 2
        await asyncio.sleep(0.3)  # the last access lines are written just after the responses
        answered = [a for a in served.accesses() if a.path == "/healthz" and a.status == 200]
        scraped = await http.get("/metrics")
        forwarded = await http.get("/metrics", headers={"X-Forwarded-For": "198.51.100.1"})
    assert scraped.status_code == 200
    samples = parse(scraped.text)
    labels = {"route": "/healthz", "method": "GET", "status": "200"}
    assert value(samples, "quart_auth_app_requests_total", **labels) == len(answered)
    assert forwarded.status_code == 404  # a proxy on this host forwarded it: not local
    served.kill(15)
    assert served.process.returncode == 0
    assert not metrics_dir.exists()
