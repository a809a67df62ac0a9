"""Cross-origin protection and response headers (SPEC §7)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from quart import Response, request
from quart.json.provider import DefaultJSONProvider

from .errors import AppError

if TYPE_CHECKING:
    from quart import Quart

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # exactly Go's list

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


def init_security(app: Quart) -> None:
    """Refuse cross-origin writes before any view runs; add headers to every response."""
    app.json = BoundedJSONProvider(app)

    @app.before_request
    async def refuse_cross_origin() -> None:
        if is_cross_origin(
            request.method,
            request.headers.get("Sec-Fetch-Site"),
            request.headers.get("Origin"),
            request.headers.get("Host", ""),
        ):
            raise CROSS_ORIGIN

    @app.after_request
    async def add_headers(response: Response) -> Response:
        # Not headers.setdefault: werkzeug raises and catches a KeyError for every absent name.
        present = {key.lower() for key, _ in response.headers.items()}
        for name, value in HEADERS.items():
            if name.lower() not in present:
                response.headers[name] = value
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
            response.vary.add("Cookie")
        for name in ("Server", "Access-Control-Allow-Origin"):
            response.headers.pop(name, None)
        return response
