"""The JSON API (SPEC §4): same cookie, same sessions, same domain functions as the pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field
from quart import Blueprint, Response, request
from quart_schema import (
    document_response,
    validate_querystring,
    validate_request,
    validate_response,
)

from ..agents import describe
from ..auth import (
    authenticate,
    change_password,
    list_sessions,
    login_required,
    login_user,
    logout_user,
    read_credentials,
    register,
    revoke_other_sessions,
    revoke_session,
    server_session,
    signed_in_user,
)
from ..errors import AppError
from ..openapi import NoContent
from ..store import User

bp = Blueprint("api", __name__, url_prefix="/api")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass
class RegisterIn:
    email: str
    password: str
    name: str | None = None


@dataclass
class LoginIn:
    email: str
    password: str
    remember: bool = False


@dataclass
class PasswordIn:
    current_password: str
    new_password: str


@dataclass
class UserOut:
    id: int
    email: str
    name: str


@dataclass
class SessionOut:
    id: str
    current: bool
    user_agent: str
    device: str  # readable, e.g. "Firefox 128 on Ubuntu"
    ip: str
    created_at: float
    last_seen: float
    expires_at: float
    remember: bool


@dataclass
class SessionsOut:
    sessions: list[SessionOut]
    next_offset: int | None = None  # pass as `offset` for the next page; None: no more


@dataclass
class PageQuery:
    limit: Annotated[int, Field(ge=1, le=100)] = 50
    offset: Annotated[int, Field(ge=0, le=100_000)] = 0


@dataclass
class RevokedOut:
    revoked: int


@dataclass
class ErrorOut:
    error: str
    message: str
    fields: dict[str, str] | None = None


def _user_out(user: User) -> UserOut:
    return UserOut(id=user.id, email=user.email, name=user.name)


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


@bp.post("/register")
@validate_request(RegisterIn)
@validate_response(UserOut, 201)
@document_response(ErrorOut, 400)
@document_response(ErrorOut, 409)
@document_response(ErrorOut, 413)
@document_response(ErrorOut, 415)
@document_response(ErrorOut, 429)
async def api_register(data: RegisterIn) -> tuple[UserOut, int]:
    """Create an account and sign it in."""
    user = await register(data.__dict__)
    return _user_out(user), 201


@bp.post("/login")
@validate_request(LoginIn)
@validate_response(UserOut, 200)
@document_response(ErrorOut, 400)
@document_response(ErrorOut, 401)
@document_response(ErrorOut, 413)
@document_response(ErrorOut, 415)
@document_response(ErrorOut, 429)
async def api_login(data: LoginIn) -> UserOut:
    """Sign in; the response sets the session cookie."""
    user = await authenticate(*read_credentials(data.__dict__))
    await login_user(user, remember=data.remember)
    return _user_out(user)


@bp.get("/me")
@validate_response(UserOut, 200)
@document_response(ErrorOut, 401)
@login_required
async def api_me() -> UserOut:
    """The signed-in user."""
    user = signed_in_user()
    return _user_out(user)


@bp.post("/logout")
@document_response(NoContent, 204)
@document_response(ErrorOut, 400)
@document_response(ErrorOut, 413)
@document_response(ErrorOut, 415)
async def api_logout() -> Response:
    """End the session; its cookie is worthless afterwards."""
    await logout_user()
    return Response("", status=204)


@bp.get("/sessions")
@validate_querystring(PageQuery)
@validate_response(SessionsOut, 200)
@document_response(ErrorOut, 400)
@document_response(ErrorOut, 401)
@login_required
async def api_sessions(query_args: PageQuery) -> SessionsOut:
    """The signed-in user's active sessions, most recently used first, a page at a time."""
    user = signed_in_user()
    mine = server_session().token_hash
    records, more = await list_sessions(user, query_args.offset, query_args.limit)
    return SessionsOut(
        next_offset=query_args.offset + len(records) if more else None,
        sessions=[
            SessionOut(
                id=r.id,
                current=r.token_hash == mine,
                user_agent=r.user_agent,
                device=r.device or describe(r.user_agent),
                ip=r.ip,
                created_at=r.created_at,
                last_seen=r.last_seen,
                expires_at=r.expires_at,
                remember=r.remember,
            )
            for r in records
        ],
    )


@bp.delete("/sessions/<session_id>")
@document_response(NoContent, 204)
@document_response(ErrorOut, 401)
@document_response(ErrorOut, 404)
@login_required
async def api_revoke_session(session_id: str) -> Response:
    """Revoke one of the user's sessions."""
    user = signed_in_user()
    await revoke_session(user, session_id)
    return Response("", status=204)


@bp.post("/sessions/revoke-others")
@validate_response(RevokedOut, 200)
@document_response(ErrorOut, 400)
@document_response(ErrorOut, 401)
@document_response(ErrorOut, 413)
@document_response(ErrorOut, 415)
@login_required
async def api_revoke_others() -> RevokedOut:
    """Revoke every session of the user except this one."""
    user = signed_in_user()
    return RevokedOut(revoked=await revoke_other_sessions(user))


@bp.post("/password")
@validate_request(PasswordIn)
@document_response(NoContent, 204)
@document_response(ErrorOut, 400)
@document_response(ErrorOut, 401)
@document_response(ErrorOut, 403)
@document_response(ErrorOut, 413)
@document_response(ErrorOut, 415)
@document_response(ErrorOut, 429)
@login_required
async def api_password(data: PasswordIn) -> Response:
    """Change the password: every other session ends, this one gets a new token."""
    user = signed_in_user()
    await change_password(user, data.__dict__)
    return Response("", status=204)
