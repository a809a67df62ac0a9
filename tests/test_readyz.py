"""GET /readyz (SPEC §13): ready when the store answers on the current schema; 503 while the
process drains on SIGTERM, in-flight requests still finished."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from quart import Quart
from quart.testing import QuartClient
from servers import client, start

from quart_auth_app.metrics import begin_draining
from quart_auth_app.services import services
from quart_auth_app.store import StoreUnavailable


async def test_ready_when_the_store_answers_on_the_current_schema(
    app: Quart, client: QuartClient
) -> None:
    current, newest = await services(app).store.schema_version()
    assert current == newest > 0
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ready"}


async def test_an_outdated_schema_is_not_ready(
    app: Quart, client: QuartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def behind() -> tuple[int, int]:
        return 3, 9

    monkeypatch.setattr(services(app).store, "schema_version", behind)
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert await response.get_json() == {"status": "schema_outdated"}


async def test_a_store_that_does_not_answer_is_not_ready(
    app: Quart, client: QuartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> tuple[int, int]:
        raise StoreUnavailable("gone")

    monkeypatch.setattr(services(app).store, "schema_version", down)
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert await response.get_json() == {"status": "unavailable"}


async def test_draining_is_not_ready_but_alive(app: Quart, client: QuartClient) -> None:
    begin_draining(app)
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert await response.get_json() == {"status": "draining"}
    assert (await client.get("/healthz")).status_code == 200  # liveness is another question


async def slow_sign_in(http: httpx.AsyncClient, n: int) -> httpx.Response:
    """A sign-in for an unknown email: one bcrypt run at the server's cost, queued behind
    the others on the worker's one bcrypt thread."""
    return await http.post("/api/login", json={"email": f"u{n}@example.com", "password": "p4ss"})


@pytest.mark.integration
@pytest.mark.slow
async def test_sigterm_drains_ready_503_while_in_flight_requests_finish(tmp_path: Path) -> None:
    env = {
        "QUART_DATABASE": str(tmp_path / "app.sqlite3"),
        "QUART_THROTTLE_ENABLED": "false",
        "QUART_BCRYPT_ROUNDS": "13",  # ~0.4 s a run here
        "QUART_BCRYPT_THREADS": "1",
    }
    # Time enough to finish even on a loaded machine: the end of that time is the next test.
    server = start(tmp_path, env, args=("--drain-delay", "1.5", "--graceful-timeout", "60"))
    try:
        async with client(server) as http, client(server, fresh_connections=True) as probe:
            in_flight = [asyncio.create_task(slow_sign_in(http, n)) for n in range(12)]
            await asyncio.sleep(0.5)  # every one sent and waiting for bcrypt
            os.killpg(server.process.pid, signal.SIGTERM)  # as systemd and docker stop do
            deadline = time.monotonic() + 1.5
            ready = await probe.get("/readyz")
            while ready.status_code == 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                ready = await probe.get("/readyz")
            still_running = sum(not task.done() for task in in_flight)
            finished = await asyncio.gather(*in_flight, return_exceptions=True)
        assert ready.status_code == 503
        assert ready.json() == {"status": "draining"}
        assert still_running > 0
        assert [getattr(r, "status_code", r) for r in finished] == [401] * len(in_flight)
        assert server.process.wait(timeout=30) == 0
    finally:
        server.kill()
    assert "Traceback" not in server.log_text()


@pytest.mark.integration
@pytest.mark.slow
async def test_a_request_cut_when_the_graceful_shutdown_runs_out_is_a_503(tmp_path: Path) -> None:
    """Past `graceful_timeout` Hypercorn cancels what still runs and answers 500 for it; the
    launcher's workers answer 503 with Retry-After instead (nothing was wrong with it)."""
    env = {
        "QUART_DATABASE": str(tmp_path / "app.sqlite3"),
        "QUART_THROTTLE_ENABLED": "false",
        "QUART_BCRYPT_ROUNDS": "14",  # ~0.8 s a run here: four take longer than the timeout
        "QUART_BCRYPT_THREADS": "1",
    }
    server = start(tmp_path, env, workers=1, args=("--graceful-timeout", "1"))
    try:
        async with client(server) as http:
            in_flight = [asyncio.create_task(slow_sign_in(http, n)) for n in range(4)]
            await asyncio.sleep(0.5)
            os.killpg(server.process.pid, signal.SIGTERM)
            finished = await asyncio.gather(*in_flight, return_exceptions=True)
        assert server.process.wait(timeout=30) == 0
    finally:
        server.kill()
    statuses = [getattr(r, "status_code", r) for r in finished]
    assert 500 not in statuses and 503 in statuses, statuses
    cut = next(r for r in finished if isinstance(r, httpx.Response) and r.status_code == 503)
    assert cut.headers["Retry-After"] == "5" and cut.json()["error"] == "unavailable"
