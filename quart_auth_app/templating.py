"""Template helpers: the signed-in user in every page, readable devices and times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape
from quart import current_app
from quart.globals import request_ctx

from .agents import label
from .auth import current_user
from .timefmt import ago, duration
from .validation import EMAIL_MAX, NAME_MAX

if TYPE_CHECKING:
    from quart import Quart


def device_of(row: Any) -> str:
    """The device a stored session or event was made from (named when it was stored)."""
    return label(row.device, row.user_agent)


def when(timestamp: float) -> Markup:
    """A relative time with the exact UTC time on hover."""
    exact = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        exact, exact, escape(ago(timestamp))
    )


class Limits:
    """The input limits the server enforces, read where the forms need them (one source)."""

    email_max = EMAIL_MAX
    name_max = NAME_MAX

    @property
    def password_min(self) -> int:
        return int(current_app.config["PASSWORD_MIN_LENGTH"])

    @property
    def password_max(self) -> int:
        return int(current_app.config["PASSWORD_MAX_LENGTH"])

    @property
    def remember_days(self) -> int:
        return round(float(current_app.config["REMEMBER_LIFETIME"]) / 86400)


URLS_KEPT = 1024  # built URLs remembered per app; past it the memo starts afresh


class PageURLs:
    """`url_for` for templates, each URL built once per host and root path.

    A page builds the same handful of URLs (the nav, the stylesheet, the script) on every
    render, and Werkzeug's URL building was a tenth of a signed-in page's CPU. The routes
    do not change once the app serves, so a relative URL depends only on the endpoint, its
    values and where the app is mounted (and the host, if routes match hosts). Anything else
    (external URLs, anchors, `url_defaults` functions, outside a request) goes to Quart.
    """

    def __init__(self, app: Quart) -> None:
        self.app = app
        self.built: dict[tuple[Any, ...], str] = {}

    def __call__(self, endpoint: str, **values: Any) -> str:
        app = self.app
        if not request_ctx or app.url_default_functions:
            return app.url_for(endpoint, **values)
        request = request_ctx.request
        try:
            key = (
                request.host if app.url_map.host_matching else None,
                request.root_path,
                request.blueprint if endpoint[:1] == "." else None,
                endpoint,
                *(sorted(values.items()) if values else ()),
            )
            url = self.built.get(key)
        except TypeError:  # a value that is not hashable
            return app.url_for(endpoint, **values)
        if url is None:
            url = app.url_for(endpoint, **values)
            if any(name.startswith("_") for name in values):  # _external, _anchor, ...
                return url
            if len(self.built) >= URLS_KEPT:
                self.built.clear()
            self.built[key] = url
        return url


def init_templating(app: Quart) -> None:
    """Register the filters and put `current_user` into every template (call after blueprints)."""
    app.jinja_env.filters["device"] = device_of
    app.jinja_env.globals["limits"] = Limits()
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.globals["url_for"] = PageURLs(app)

    @app.context_processor
    async def inject_user() -> dict[str, Any]:
        return {"current_user": current_user()}

    # Each blueprint inherits Flask's synchronous default context processor, and Quart runs
    # a synchronous processor in its thread pool: a thread hop on every render (seen in the
    # bench profile). Quart's own async one, registered on the app, already gives every
    # template `g`, `request` and `session`.
    # It is recognised by its module (its name is private to Flask).
    for processors in app.template_context_processors.values():
        processors[:] = [p for p in processors if p.__module__ != "flask.templating"]
