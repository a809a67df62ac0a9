"""The API's blueprint and what every route of it shares (SPEC §4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from quart import Blueprint, request
from quart_schema import document_response
from werkzeug.routing import BaseConverter

from ...errors import AppError, ErrorOut
from ...store import User
from .models import UserOut

bp = Blueprint("api", __name__, url_prefix="/api")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SIGNED_IN: list[dict[str, list[str]]] = [
    {"cookieAuth": []}
]  # the OpenAPI security requirement: the session cookie
MAYBE_SIGNED_IN: list[dict[str, list[str]]] = [{}, {"cookieAuth": []}]  # with or without it
V = TypeVar("V", bound=Callable[..., Any])


class SessionIdConverter(BaseConverter):
    """A session id: one path segment, but not the name of a sibling route (without this,
    DELETE /api/sessions/revoke-others would be routed to the revocation of one session)."""

    regex = r"(?!revoke-others\Z)[^/]+"


bp.record_once(lambda state: state.app.url_map.converters.update(session_id=SessionIdConverter))


def refuses(*statuses: int) -> Callable[[V], V]:
    """Document the refusals a view itself can answer with (openapi.py adds the app-wide ones:
    400, 503, and for writes 403, 413 and 415), each with the shared error model."""

    def decorate(view: V) -> V:
        for status in statuses:
            view = document_response(ErrorOut, status)(view)
        return view

    return decorate


def user_out(user: User) -> UserOut:
    return UserOut(id=user.id, email=user.email, name=user.name, email_verified=user.email_verified)


@bp.before_request
async def require_json() -> None:
    """Bodies must be JSON: a form post from another page can never reach the API."""
    bodiless = not request.mimetype and not request.content_length  # e.g. curl -X POST .../logout
    if request.method in BODY_METHODS and request.mimetype != "application/json" and not bodiless:
        raise AppError(
            415, "unsupported_media_type", "Send JSON with Content-Type: application/json."
        )
    if request.method in BODY_METHODS:
        # Quart decodes the body as UTF-8 before parsing; bad bytes would surface as a 500.
        try:
            (await request.get_data(True, False, False)).decode("utf-8")
        except UnicodeDecodeError:
            raise AppError(400, "invalid_json", "The body must be UTF-8 encoded JSON.") from None
