"""Quart's per-request machinery, trimmed (requestpath.py): the same answers, worked out once."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from quart import Quart, Response, request
from quart.globals import request_ctx
from quart.wrappers.base import BaseRequestWebsocket

from quart_auth_app import create_app
from quart_auth_app.requestpath import GC_THRESHOLDS, BlueprintsOnce, on_response, split_blueprints


@pytest.mark.parametrize(
    ("name", "expected"),
    [("pages", ["pages"]), ("a.b", ["a.b", "a"]), ("a.b.c", ["a.b.c", "a.b", "a"])],
)
def test_split_blueprints(name: str, expected: list[str]) -> None:
    assert split_blueprints(name) == expected


@pytest.mark.parametrize(("path", "expected"), [("/protected", ["pages"]), ("/nowhere", [])])
async def test_blueprints_are_quarts(app: Quart, path: str, expected: list[str]) -> None:
    assert issubclass(app.request_class, BlueprintsOnce)
    async with app.test_request_context(path):
        quarts = BaseRequestWebsocket.blueprints.fget(request_ctx.request)  # type: ignore[attr-defined]
        assert request.blueprints == quarts == expected
        request.blueprints.append("changed")  # a copy each time: callers cannot spoil it
        assert request.blueprints == expected


async def test_ensure_async_is_remembered_and_still_runs_sync_functions(app: Quart) -> None:
    async def coroutine_function() -> int:
        return 1

    def plain() -> int:
        return 2

    assert app.ensure_async(coroutine_function) is coroutine_function
    wrapped = app.ensure_async(plain)
    assert app.ensure_async(plain) is wrapped
    async with app.app_context():
        assert await wrapped() == 2


async def test_make_response_passes_a_response_and_converts_the_rest(app: Quart) -> None:
    response = Response("hi")
    async with app.test_request_context("/"):
        assert await app.make_response(response) is response
        made = await app.make_response(({"a": 1}, 201))
    assert made.status_code == 201
    assert await made.get_json() == {"a": 1}


async def test_a_serving_app_collects_its_youngest_objects_less_often(
    config: dict[str, Any],
) -> None:
    gc.set_threshold(700, 10, 10)  # Python's default
    try:
        app = create_app(config)
        assert gc.get_threshold() == (700, 10, 10)  # building an app changes nothing...
        async with app.test_app():
            assert gc.get_threshold() == GC_THRESHOLDS  # ...serving does
        assert GC_THRESHOLDS[0] > 700 and GC_THRESHOLDS[1:] == (10, 10)
    finally:
        gc.set_threshold(*GC_THRESHOLDS)


async def test_response_steps_run_in_order_with_the_request_on_every_answer(
    config: dict[str, Any],
) -> None:
    app = create_app(config)
    seen: list[tuple[str, str, int]] = []
    on_response(
        app, lambda asked, response: seen.append(("first", asked.path, response.status_code))
    )
    on_response(
        app, lambda asked, response: seen.append(("second", asked.path, response.status_code))
    )
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/nowhere")).status_code == 404  # a handled error's answer
        answered = await client.get("/login")
    assert seen == [
        ("first", "/nowhere", 404),
        ("second", "/nowhere", 404),
        ("first", "/login", 200),
        ("second", "/login", 200),
    ]
    # One after-request hook runs every step (the metrics, the headers and the new two).
    assert len(app.after_request_funcs[None]) == 1
    assert answered.headers["X-Frame-Options"] == "DENY"  # the app's own steps ran too
