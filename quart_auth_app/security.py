"""Cross-origin protection and response headers (SPEC §7)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from quart import Request, Response
from quart.globals import request_ctx
from quart.json.provider import DefaultJSONProvider
from werkzeug.datastructures import Headers

from .errors import AppError, from_status
from .requestpath import on_response

if TYPE_CHECKING:
    from quart import Quart

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # exactly Go's list
# Quart applies MAX_FORM_PARTS to multipart bodies only; URL-encoded ones are counted here.
URLENCODED = frozenset({"application/x-www-form-urlencoded", "application/x-url-encoded"})

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

# What add_headers appends to a private response that sets none of these itself (nearly all).
PRIVATE_HEADERS = [*HEADERS.items(), ("Cache-Control", "no-store"), ("Vary", "Cookie")]
CHECKED_HEADERS = Headers(PRIVATE_HEADERS).to_wsgi_list()
REMOVED = ("Server", "Access-Control-Allow-Origin")
SET_HERE = frozenset(name.lower() for name, _ in PRIVATE_HEADERS) | {n.lower() for n in REMOVED}

CROSS_ORIGIN = AppError(
    403,
    "cross_origin",
    "Cross-origin request refused: this form can only be sent from this site.",
)


def is_cross_origin(method: str, sec_fetch_site: str | None, origin: str | None, host: str) -> bool:
    """Go 1.25's CrossOriginProtection: Sec-Fetch-Site first, then Origin against Host."""
    if method in SAFE_METHODS:
        return False
    if sec_fetch_site:
        return sec_fetch_site not in ("same-origin", "none")
    if not origin:
        return False  # neither header: not a browser (curl, scripts)
    try:
        origin_host = urlsplit(origin).netloc
    except ValueError:
        return True
    return origin_host.lower() != host.lower()


class BoundedJSONProvider(DefaultJSONProvider):
    """JSON whose nesting is too deep for the parser is malformed input (400), not a crash."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


async def refuse_crowded_form(asked: Request, max_parts: int) -> None:
    """400 for a query string, 413 for a URL-encoded body, of more than `max_parts` fields,
    before either is parsed.

    Parsing 21,000 empty fields (63 KB) cost ~31 ms of CPU, and 16,000 in a query string
    (what fits in Hypercorn's 16 KB request head) ~25 ms; counting separators costs
    microseconds, and no form or page of this app takes more than a handful of fields.
    """
    if asked.query_string.count(b"&") >= max_parts:
        raise from_status(400, "The address has too many parameters.")
    if asked.method in SAFE_METHODS or asked.mimetype not in URLENCODED:
        return
    body = await asked.get_data(True, False, False)  # bounded by MAX_CONTENT_LENGTH (413)
    if body.count(b"&") >= max_parts:
        raise from_status(413, "The form has too many fields.")


def add_headers(answered: Request, response: Response) -> None:
    """The security headers, on every response (a step of `on_response`)."""
    # Static files may be cached; anything else under /static/ (a 404 page, which shows
    # who is signed in and their flashes) is as private as every other page.
    private = answered.endpoint != "static" or response.status_code >= 300
    present = {key.lower() for key, _ in response.headers.items()}
    if private and present.isdisjoint(SET_HERE):
        # The usual case, in one step: setting each header scans the list for it, and
        # `extend` checks each value again for newlines (these were checked once, at import).
        response.headers._list.extend(CHECKED_HEADERS)  # werkzeug's list of (name, value)
        return
    # Not headers.setdefault: werkzeug raises and catches a KeyError for every absent name.
    for name, value in HEADERS.items():
        if name.lower() not in present:
            response.headers[name] = value
    if private:
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("Cookie")
    for name in REMOVED:
        response.headers.pop(name, None)


def init_security(app: Quart) -> None:
    """Refuse cross-origin writes and crowded forms before any view runs; add headers."""
    app.json = BoundedJSONProvider(app)

    @app.before_request
    async def refuse_cross_origin_and_crowded_forms() -> None:  # one hook: one call a request
        asked = request_ctx.request  # looked up once, not at each read through `request`
        if asked.method not in SAFE_METHODS and is_cross_origin(
            asked.method,
            asked.headers.get("Sec-Fetch-Site"),
            asked.headers.get("Origin"),
            asked.headers.get("Host", ""),
        ):
            raise CROSS_ORIGIN
        await refuse_crowded_form(asked, int(app.config["MAX_FORM_PARTS"]))

    on_response(app, add_headers)
