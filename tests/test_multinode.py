"""Two real Hypercorn nodes against one PostgreSQL share sessions and throttling (SPEC §9)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from servers import Server, running

pytestmark = [pytest.mark.postgres, pytest.mark.integration]

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "plum tractor velvet orbit"


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[tuple[Server, Server]]:
    """Nodes A and B: one Hypercorn worker each, one database, one shared secret."""
    env = {
        "QUART_DATABASE_URL": pg_url,
        "QUART_DATABASE_POOL_SIZE": "4",
        "QUART_SECRET_KEY": "multinode test secret",
        "QUART_THROTTLE_ACCOUNT_FAILURES": "3",
        "QUART_THROTTLE_SIGNUPS_PER_ADDRESS": "1000",
    }
    with running(tmp_path, env, workers=1) as a, running(tmp_path, env, workers=1) as b:
        yield a, b


def call(
    node: Server, method: str, path: str, token: str | None = None, **kwargs: object
) -> httpx.Response:
    cookies = {"session": token} if token else None
    return httpx.request(method, node.url + path, cookies=cookies, timeout=30, **kwargs)  # type: ignore[arg-type]


def sign_in(node: Server, email: str = "ada@example.com", password: str = PASSWORD) -> str:
    response = call(node, "POST", "/api/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.cookies["session"]


def me(node: Server, token: str) -> int:
    return call(node, "GET", "/api/me", token).status_code


@pytest.fixture
def ada(nodes: tuple[Server, Server]) -> str:
    """Ada signs up on node A; her first session's token."""
    response = call(
        nodes[0], "POST", "/api/register", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    return response.cookies["session"]


def test_both_nodes_report_postgresql(nodes: tuple[Server, Server]) -> None:
    for node in nodes:
        response = call(node, "GET", "/healthz")
        assert (response.status_code, response.json()) == (
            200,
            {"status": "ok", "engine": "postgresql"},
        )


def test_sign_in_on_a_is_signed_in_on_b_and_logout_on_b_ends_it_on_a(
    nodes: tuple[Server, Server], ada: str
) -> None:
    a, b = nodes
    token = sign_in(a)
    assert call(b, "GET", "/api/me", token).json()["email"] == "ada@example.com"
    assert call(b, "GET", "/protected", token).status_code == 200
    assert call(b, "POST", "/api/logout", token, json={}).status_code == 204
    assert (me(a, token), me(b, token)) == (401, 401)
    assert me(a, ada) == 200  # the other session lives on


def test_password_change_on_a_ends_the_other_session_on_b(
    nodes: tuple[Server, Server], ada: str
) -> None:
    a, b = nodes
    on_b = sign_in(b)
    assert me(a, on_b) == 200
    response = call(
        a,
        "POST",
        "/api/password",
        ada,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 204, response.text
    rotated = response.cookies["session"]
    assert (me(b, on_b), me(a, on_b)) == (401, 401)
    assert (me(b, ada), me(b, rotated)) == (401, 200)
    assert sign_in(b, password=NEW_PASSWORD)


def test_failed_sign_ins_are_counted_across_both_nodes(
    nodes: tuple[Server, Server], ada: str
) -> None:
    a, b = nodes
    wrong = {"email": "ada@example.com", "password": "not the password at all"}
    for node in (a, b, a):
        assert call(node, "POST", "/api/login", json=wrong).status_code == 401
    for node in (b, a):
        response = call(
            node, "POST", "/api/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0


async def test_concurrent_sign_ups_of_one_email_across_nodes_make_one_account(
    nodes: tuple[Server, Server], pg_url: str
) -> None:
    body = {"email": "race@example.com", "password": PASSWORD}
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(
            *(client.post(nodes[i % 2].url + "/api/register", json=body) for i in range(12))
        )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 11 + [201]  # the same password signs in (retry-safe, issue #16)
    db = await asyncpg.connect(pg_url)
    try:
        count = await db.fetchval("SELECT count(*) FROM users WHERE email = 'race@example.com'")
    finally:
        await db.close()
    assert count == 1
