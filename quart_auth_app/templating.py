"""Template helpers: the signed-in user in every page, readable devices and times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from markupsafe import Markup, escape
from quart import current_app, get_flashed_messages, has_request_context
from quart.globals import app_ctx, request_ctx

from .agents import label
from .sessions import FLASHES, ServerSession
from .timefmt import ago, duration
from .validation import EMAIL_MAX, NAME_MAX

if TYPE_CHECKING:
    from collections.abc import Iterator

    from quart import Quart
    from quart.ctx import RequestContext
    from werkzeug.local import LocalProxy


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


class Flashes:
    """The request's flashed messages, (category, message) pairs, taken from the session
    when a template first reads them (`{% if flashes %}`, `{% for ... in flashes %}`), as
    Quart's `get_flashed_messages(with_categories=True)` would: a call from a template
    costs microseconds in Jinja's machinery, and nearly every page has none to show. A
    template that never reads them (a fragment) leaves them for the next page."""

    __slots__ = ("_context", "_taken")

    def __init__(self, context: RequestContext) -> None:
        self._context = context
        self._taken: list[tuple[str, str]] | None = None

    def _take(self) -> list[tuple[str, str]]:
        if self._taken is None:
            context = self._context
            stored = cast("ServerSession", context.session)
            waiting = context.flashes is not None or FLASHES in stored
            self._taken = cast(
                list[tuple[str, str]],
                get_flashed_messages(with_categories=True) if waiting else [],
            )
        return self._taken

    def __bool__(self) -> bool:
        return bool(self._take())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._take())


URLS_KEPT = 1024  # built URLs remembered per app; past it the memo starts afresh


class PageURLs:
    """`url_for` for templates, each URL built once per host and root path.

    A page builds the same handful of URLs (the nav, the stylesheet, the script) on every
    render, and Werkzeug's URL building was a tenth of a signed-in page's CPU. The routes
    do not change once the app serves, so a relative URL depends only on the endpoint, its
    values and where the app is mounted. Anything else (a blueprint-relative endpoint,
    external URLs, anchors, `url_defaults` functions, routes matched by host, outside a
    request) goes to Quart every time.
    """

    def __init__(self, app: Quart) -> None:
        self.app = app
        self.built: dict[tuple[Any, ...], str] = {}

    def __call__(self, endpoint: str, **values: Any) -> str:
        if not has_request_context():
            return self.app.url_for(endpoint, **values)
        root = request_ctx.request.root_path
        try:
            url = self.built.get((root, endpoint, *values.items()))
        except TypeError:  # a value that is not hashable
            return self.app.url_for(endpoint, **values)
        if url is None:
            url = self.app.url_for(endpoint, **values)
            if self._reusable(endpoint, values):
                if len(self.built) >= URLS_KEPT:
                    self.built.clear()
                self.built[(root, endpoint, *values.items())] = url
        return url

    def _reusable(self, endpoint: str, values: dict[str, Any]) -> bool:
        """Whether the URL depends on nothing but the key: not relative to the request's
        blueprint, not external or anchored, no url_defaults, routes not matched by host."""
        return not (endpoint.startswith(".") or any(n.startswith("_") for n in values)) and (
            self.reusable
        )

    @property
    def reusable(self) -> bool:
        """Whether URLs built here depend only on endpoint, values and root path."""
        return not (self.app.url_default_functions or self.app.url_map.host_matching)


@dataclass(frozen=True)
class SiteURLs:
    """The layout's links (base.html), read as attributes: a call from a template costs
    microseconds in Jinja's machinery alone, and the layout made seven on every page."""

    home: str
    style: str
    script: str
    protected: str
    account: str
    logout: str
    login: str
    register: str

    @classmethod
    def build(cls, urls: PageURLs) -> SiteURLs:
        return cls(
            home=urls("pages.index"),
            style=urls("static", filename="style.css"),
            script=urls("static", filename="app.js"),
            protected=urls("pages.protected"),
            account=urls("account.account"),
            logout=urls("pages.logout_post"),
            login=urls("pages.login"),
            register=urls("pages.register_form"),
        )


def init_templating(app: Quart) -> None:
    """Register the filters and put `current_user` into every template (call after blueprints)."""
    app.jinja_env.filters["device"] = device_of
    app.jinja_env.globals["limits"] = Limits()
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["duration"] = duration
    urls = app.jinja_env.globals["url_for"] = PageURLs(app)
    sites: dict[str, SiteURLs] = {}  # by root path

    @app.context_processor
    async def inject_user() -> dict[str, Any]:
        # The request's context looked up once (each read through a proxy looks it up).
        proxy = cast("LocalProxy[RequestContext]", request_ctx)
        context = proxy._get_current_object() if has_request_context() else None
        root = context.request.root_path if context is not None else None
        site = sites.get(root) if root is not None else None
        if site is None:
            site = SiteURLs.build(urls)
            if root is not None and urls.reusable:
                if len(sites) >= URLS_KEPT:
                    sites.clear()
                sites[root] = site
        if context is None:
            return {"g": app_ctx.g, "current_user": None, "site": site}
        # `g`, `request` and `session` too, as Quart's default processor gives them (dropped
        # below: one processor a render instead of two).
        session = cast(ServerSession, context.session)
        return {
            "g": app_ctx.g,
            "request": context.request,
            "session": session,
            "current_user": session.user,
            "flashes": Flashes(context),
            "site": site,
        }

    # Each blueprint inherits Flask's synchronous default context processor, and Quart runs
    # a synchronous processor in its thread pool: a thread hop on every render (seen in the
    # bench profile). Quart's own default one (async, on the app) gives `g`, `request` and
    # `session`, which inject_user gives now. Both are recognised by their module (their
    # names are private to Flask and Quart).
    default = ("flask.templating", "quart.templating")
    for processors in app.template_context_processors.values():
        processors[:] = [p for p in processors if p.__module__ not in default]
