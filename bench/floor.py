"""The floor of target 1: what every signed-in page must cost, in a bare Quart app.

`GET /protected` here does only the work no implementation of SPEC §5-§7 can skip, with
the app's own fastest parts: the session row (and its user) read through the app's store
(reads batched per loop turn), the app's expiry, epoch and idle checks
(`ServerSessionInterface.alive`), the same page rendered from the same templates by a
plain synchronous Jinja environment, the same security headers, and the app's collector
thresholds. It has none of the app's machinery: no
session interface, no before- or after-request hooks (cross-origin check, metrics), no
context processor, no flashes. The bench serves it beside the app and the Quart hello:
the app's ratio to the Quart hello can only come as close to 0.80 x as this floor's
allows, and the gap between the app and the floor is what its machinery costs.
Served by `bench.launch`, as the hellos are.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from hypercorn.config import Config
from jinja2 import Environment, FileSystemLoader
from quart import Quart, Response, redirect, request
from werkzeug.datastructures import Headers

from quart_auth_app.config import DEFAULTS
from quart_auth_app.requestpath import GC_THRESHOLDS
from quart_auth_app.security import PRIVATE_HEADERS
from quart_auth_app.serve import RedactingLogger
from quart_auth_app.sessions import MAX_COOKIE_LENGTH, ServerSessionInterface, hash_token
from quart_auth_app.store import Store, open_store
from quart_auth_app.templating import SiteURLs

from .server import ROOT

Config.logger_class = RedactingLogger


# The layout's links as the app builds them at its root path.
SITE = SiteURLs(
    home="/",
    style="/static/style.css",
    script="/static/app.js",
    protected="/protected",
    account="/account",
    logout="/logout",
    login="/login",
    register="/register",
)


def create_floor() -> Quart:
    """The floor app on the database named by QUART_DATABASE (the app's schema and rows)."""
    floor = Quart(__name__)
    # Templates are not reloaded, as in the app when not debugging (else every render asks
    # the file system whether base.html, which the page extends, changed).
    pages = Environment(
        loader=FileSystemLoader(ROOT / "templates"), autoescape=True, auto_reload=False
    )
    template = pages.get_template("protected.html")
    floor.config["SESSION_IDLE_TIMEOUT"] = DEFAULTS["SESSION_IDLE_TIMEOUT"]
    stores: list[Store] = []

    @floor.before_serving
    async def open_database() -> None:
        store = open_store({"DATABASE": os.environ["QUART_DATABASE"]})
        await store.open()
        stores.append(store)
        gc.set_threshold(*GC_THRESHOLDS)

    @floor.after_serving
    async def close_database() -> None:
        for store in stores:
            await store.close()

    @floor.get("/healthz")
    async def healthz() -> str:
        return "ok\n"

    # Named as the app's route, so the layout marks the same link as the current page.
    @floor.get("/protected", endpoint="pages.protected")
    async def protected() -> Any:
        token = request.cookies.get("session", "")
        readable = 0 < len(token) <= MAX_COOKIE_LENGTH and token.isascii()
        record = await stores[0].select_session_by_hash(hash_token(token)) if readable else None
        if (
            record is None
            or record.user is None
            or not ServerSessionInterface.alive(floor, record, time.time())
        ):
            return redirect("/login?next=/protected")
        user = record.user
        context = {"site": SITE, "request": request, "current_user": user, "user": user}
        html = template.render(context, flashes=(), error=None)
        return Response(html, headers=Headers(PRIVATE_HEADERS))  # as Response would make it

    return floor
