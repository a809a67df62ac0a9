"""Signing up, in and out, the session list and the password (SPEC §4)."""

from __future__ import annotations

from quart import Response
from quart_schema import (
    document_response,
    security_scheme,
    validate_querystring,
    validate_request,
    validate_response,
)

from ...account import list_sessions, revoke_other_sessions, revoke_session
from ...agents import label
from ...auth import (
    authenticate,
    change_password,
    login_required,
    logout_user,
    read_credentials,
    register,
    server_session,
    signed_in_user,
    unverified_ok,
)
from ...factors import METHODS, sign_in
from ...openapi import NoContent, sets_session_cookie
from .base import MAYBE_SIGNED_IN, SIGNED_IN, bp, refuses, user_out
from .models import (
    LoginIn,
    LoginOut,
    PageQuery,
    PasswordIn,
    RegisterIn,
    RevokedOut,
    SecondFactorOut,
    SessionOut,
    SessionsOut,
    UserOut,
)


@bp.post("/register")
@sets_session_cookie
@refuses(400, 409, 429)
@validate_request(RegisterIn)
@validate_response(UserOut, 201)
@validate_response(LoginOut, 200)
async def api_register(data: RegisterIn) -> tuple[UserOut | LoginOut, int]:
    """Create an account and sign it in (201). Safe to retry: when the email is already the
    account of this very password (a sign-up whose answer was lost), it is a sign-in and
    answers as POST /api/login does (200); any other password is 409 `email_taken`,
    counted by the throttle as a failed sign-in."""
    signup = await register(data.__dict__)
    if signup.created:
        return user_out(signup.user), 201
    if not signup.complete:
        return LoginOut(SecondFactorOut(second_factor_required=True, methods=METHODS)), 200
    return LoginOut(user_out(signup.user)), 200


@bp.post("/login")
@sets_session_cookie
@refuses(400, 401, 429)
@validate_request(LoginIn)
@validate_response(LoginOut, 200)
async def api_login(data: LoginIn) -> LoginOut:
    """Sign in; the response sets the session cookie. With a second factor on, the session is
    pending: POST /api/login/second-factor finishes it."""
    user = await authenticate(*read_credentials(data.__dict__))
    if not await sign_in(user, remember=data.remember):
        return LoginOut(SecondFactorOut(second_factor_required=True, methods=METHODS))
    return LoginOut(user_out(user))


@bp.get("/me")
@security_scheme(SIGNED_IN)
@refuses(401)
@validate_response(UserOut, 200)
@login_required
@unverified_ok
async def api_me() -> UserOut:
    """The signed-in user."""
    user = signed_in_user()
    return user_out(user)


@bp.post("/logout")
@security_scheme(MAYBE_SIGNED_IN)
@document_response(NoContent, 204)
async def api_logout() -> Response:
    """End the session; its cookie is worthless afterwards."""
    await logout_user()
    return Response("", status=204)


@bp.get("/sessions")
@security_scheme(SIGNED_IN)
@refuses(401)
@validate_querystring(PageQuery)
@validate_response(SessionsOut, 200)
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
                device=label(r.device, r.user_agent),
                ip=r.ip,
                created_at=r.created_at,
                last_seen=r.last_seen,
                expires_at=r.expires_at,
                remember=r.remember,
            )
            for r in records
        ],
    )


@bp.delete("/sessions/<session_id:session_id>")
@security_scheme(SIGNED_IN)
@refuses(401, 404, 429)
@document_response(NoContent, 204)
@login_required
async def api_revoke_session(session_id: str) -> Response:
    """Revoke one of the user's sessions."""
    user = signed_in_user()
    await revoke_session(user, session_id)
    return Response("", status=204)


@bp.post("/sessions/revoke-others")
@security_scheme(SIGNED_IN)
@refuses(401, 429)
@validate_response(RevokedOut, 200)
@login_required
async def api_revoke_others() -> RevokedOut:
    """Revoke every session of the user except this one."""
    user = signed_in_user()
    return RevokedOut(revoked=await revoke_other_sessions(user))


@bp.post("/password")
@sets_session_cookie
@security_scheme(SIGNED_IN)
@refuses(400, 401, 403, 429)
@validate_request(PasswordIn)
@document_response(NoContent, 204)
@login_required
async def api_password(data: PasswordIn) -> Response:
    """Change the password: every other session ends, this one gets a new token."""
    user = signed_in_user()
    await change_password(user, data.__dict__)
    return Response("", status=204)
