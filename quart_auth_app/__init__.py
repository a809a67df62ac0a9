"""quart_auth_app: cookie-session authentication on Quart, with server-side sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypercorn.middleware import ProxyFixMiddleware
from quart import Quart, session
from quart_schema import QuartSchema

from .cli import register_commands
from .cli_mail import register_mail_commands
from .config import DEFAULTS, load_secret
from .errors import AppError, register_error_handlers
from .logs import log_format, use_format
from .mail.sender import Sender
from .mail.transport import transport_from_config
from .metrics import init_metrics, store_error
from .openapi import OpenAPI
from .passwords import Hasher
from .purge import purge_expired
from .requestpath import trim
from .security import init_security
from .services import Services, install, services
from .sessions import ServerSessionInterface
from .store import Store, open_store
from .templating import init_templating
from .throttle import Throttle
from .views import account, api, life, pages, passkeys, recovery, two_step

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _templates() -> str:
    """Templates ship inside the wheel; in a checkout they sit beside the package."""
    packaged = Path(__file__).parent / "templates"
    return str(packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates")


def create_app(config: Mapping[str, Any] | None = None) -> Quart:
    """Build the app: defaults, then QUART_* environment variables, then `config`."""
    app = Quart(__name__, template_folder=_templates())
    # A path is answered as sent (set before any rule is added): werkzeug would otherwise
    # redirect "/a//b" to "/a/b" with an HTML 308, even under /api/.
    app.url_map.merge_slashes = False
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env()
    if config:
        app.config.from_mapping(config)
    if not app.config["DATABASE"]:
        app.config["DATABASE"] = os.path.join(app.instance_path, "quart_auth_app.sqlite3")
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = load_secret(app.instance_path)
    if not app.config.get("DATABASE_URL"):
        Path(app.config["DATABASE"]).parent.mkdir(parents=True, exist_ok=True)

    if app.logger.level == logging.NOTSET:  # Quart's handler, at INFO: operators see the
        app.logger.setLevel(logging.INFO)  # sender's notes (and, with no MAIL_URL, each link)
    use_format(log_format(app.config), app.logger)  # LOG_FORMAT=json: a JSON object a line
    store = open_store(app.config)
    sessions = ServerSessionInterface(store)
    app.session_interface = sessions  # type: ignore[assignment]
    hasher = Hasher(int(app.config["BCRYPT_ROUNDS"]), int(app.config["BCRYPT_THREADS"]))
    mailer = Sender(app, store, transport_from_config(app.config, app.instance_path))
    install(app, Services(store, hasher, Throttle(store), sessions.touches, mailer))

    QuartSchema(
        app,
        openapi_provider_class=OpenAPI,
        info={"title": "quart_auth_app", "version": "1.0.0"},
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
    )
    blueprints = (pages, account, recovery, life, two_step, passkeys, api)
    for blueprint in (module.bp for module in blueprints):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    init_metrics(app)
    init_security(app)
    init_templating(app)
    trim(app)
    register_commands(app)
    register_mail_commands(app)
    _init_lifecycle(app)

    hops = int(app.config["TRUSTED_PROXY_HOPS"])
    if hops > 0:
        app.asgi_app = ProxyFixMiddleware(app.asgi_app, mode="legacy", trusted_hops=hops)  # type: ignore[method-assign]
    return app


def _init_lifecycle(app: Quart) -> None:
    """Open the store at start; write touches and purge expired rows in the background."""
    found = services(app)
    purger: list[asyncio.Task[None]] = []

    @app.before_serving
    async def start() -> None:
        await found.store.open()
        found.touches.start()
        found.mailer.start()
        purger.append(asyncio.create_task(_purge_forever(app, found.store)))

    @app.after_serving
    async def stop() -> None:
        while purger:
            task = purger.pop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await found.mailer.stop()
        await found.touches.stop()
        await found.store.close()
        found.hasher.close()

    @app.before_request
    async def refuse_when_store_down() -> None:
        if getattr(session, "unavailable", False):
            store_error()
            raise AppError(503, "unavailable", "The service is unavailable right now.")


async def _purge_forever(app: Quart, store: Store) -> None:
    interval = float(app.config["SESSION_PURGE_INTERVAL"])
    while True:
        await asyncio.sleep(interval)
        try:
            await purge_expired(app.config, store)
        except Exception:  # the purge must outlive a passing database fault
            log.exception("session purge failed")
