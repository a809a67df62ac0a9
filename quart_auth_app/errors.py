"""One error type for everything a client did wrong, and the handlers that render it.

API requests get `{"error", "message", "fields"?}`; pages get the error template.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quart import Response, jsonify, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from .rendering import render
from .store import StoreUnavailable

if TYPE_CHECKING:
    from quart import Quart

log = logging.getLogger(__name__)


class AppError(Exception):
    """A refusal with an HTTP status, a stable code, a human message and per-field details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.retry_after = retry_after


@dataclass
class ErrorOut:
    """The one shape of every API refusal (SPEC §4); `fields` only when fields are wrong."""

    error: str
    message: str
    fields: dict[str, str] = field(default_factory=dict)


def invalid_input(fields: dict[str, str]) -> AppError:
    """400 naming each field that is wrong."""
    return AppError(400, "invalid_input", "Please correct the fields shown.", fields)


def is_api_request() -> bool:
    """Whether the current request is to the JSON API."""
    return request.path.startswith("/api/") or request.path == "/openapi.json"


async def render_page(template: str, error: AppError | None = None, **context: Any) -> Response:
    """A page in the site layout; with an error, its status, its message and per-field
    messages (the template shows them) and Retry-After. Every HTML answer comes from here."""
    html = await render(template, {**context, "error": error})
    response = Response(html, status=error.status if error else 200, mimetype="text/html")
    if error is not None and error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


async def render_error(error: AppError) -> Response:
    """The error as JSON for the API or as a page in the site layout."""
    if not is_api_request():
        return await render_page("error.html", error)
    body: dict[str, Any] = {"error": error.code, "message": error.message}
    if error.fields:
        body["fields"] = error.fields
    response = jsonify(body)
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Please sign in first."),
    403: ("forbidden", "You are not allowed to do that."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    413: ("too_large", "The request is too large."),
    415: ("unsupported_media_type", "Send JSON with Content-Type: application/json."),
    429: ("too_many_requests", "Too many attempts. Please wait and try again."),
    500: ("internal_error", "Something went wrong on our side. Please try again."),
    503: ("unavailable", "The service is unavailable right now. Please try again soon."),
}


def from_status(status: int, message: str | None = None) -> AppError:
    """An AppError for a plain HTTP status."""
    code, default = HTTP_CODES.get(status, ("error", "The request failed."))
    return AppError(status, code, message or default)


def register_error_handlers(app: Quart) -> None:
    """Route every failure through `render_error`; nothing leaks a traceback."""

    @app.errorhandler(AppError)
    async def handle_app_error(error: AppError) -> Response:
        return await render_error(error)

    @app.errorhandler(RequestSchemaValidationError)
    async def handle_schema_error(error: RequestSchemaValidationError) -> Response:
        fields: dict[str, str] = {}
        details = getattr(error.validation_error, "errors", None)
        for item in details() if callable(details) else []:
            name = ".".join(str(part) for part in item.get("loc", ())) or "body"
            fields[name] = str(item.get("msg", "Invalid value."))
        if not fields:
            return await render_error(
                AppError(400, "invalid_json", "The body must be a JSON object.")
            )
        return await render_error(invalid_input(fields))

    @app.errorhandler(StoreUnavailable)
    async def handle_store_unavailable(error: StoreUnavailable) -> Response:
        log.warning("database unavailable: %s", error)
        return await render_error(from_status(503))

    @app.errorhandler(HTTPException)
    async def handle_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if isinstance(getattr(error, "original_exception", None), StoreUnavailable):
            status = 503  # the database failed while the response was being saved
        response = await render_error(from_status(status))
        if status == error.code:
            # e.g. the Allow of a 405, which RFC 9110 §15.5.6 requires
            for name, value in error.get_headers():
                if name.lower() != "content-type":
                    response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    async def handle_unexpected(error: Exception) -> Response:
        log.exception("unhandled error", exc_info=error)
        return await render_error(from_status(500))
