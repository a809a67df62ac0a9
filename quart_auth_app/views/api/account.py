"""The account's life over the API: recovery, the address, re-authentication, deletion,
export (SPEC §11, §12)."""

from __future__ import annotations

from typing import Any

from quart import Response
from quart_schema import document_response, security_scheme, validate_request, validate_response

from ...auth import login_required, signed_in_user, unverified_ok
from ...lifecycle import delete_account, export, reauthenticate
from ...openapi import NoContent, sets_session_cookie
from ...recovery import (
    forgot_password,
    request_email_change,
    resend_verification,
    reset_password,
    verify_email,
)
from .account_models import (
    EmailChangeIn,
    ExportOut,
    ForgotIn,
    MessageOut,
    PasswordAgainIn,
    ReauthIn,
    ResetIn,
    TokenIn,
)
from .base import MAYBE_SIGNED_IN, SIGNED_IN, bp, refuses


@bp.post("/password/forgot")
@security_scheme(MAYBE_SIGNED_IN)
@refuses(400, 429)
@validate_request(ForgotIn)
@validate_response(MessageOut, 202)
async def api_forgot(data: ForgotIn) -> tuple[MessageOut, int]:
    """Mail a reset link; the same answer, known address or not."""
    return MessageOut(message=await forgot_password(data.__dict__)), 202


@bp.post("/password/reset")
@security_scheme(MAYBE_SIGNED_IN)
@refuses(400)
@validate_request(ResetIn)
@document_response(NoContent, 204)
async def api_reset(data: ResetIn) -> Response:
    """Set a new password with a reset link's token: every session of the account ends."""
    await reset_password(data.token, data.__dict__)
    return Response("", status=204)


@bp.post("/email/verify")
@security_scheme(MAYBE_SIGNED_IN)
@refuses(400)
@validate_request(TokenIn)
@document_response(NoContent, 204)
async def api_verify(data: TokenIn) -> Response:
    """Verify the address a verification link was mailed to."""
    await verify_email(data.token)
    return Response("", status=204)


@bp.post("/email/verify/resend")
@security_scheme(SIGNED_IN)
@refuses(401, 429)
@validate_response(MessageOut, 202)
@login_required
@unverified_ok
async def api_resend() -> tuple[MessageOut, int]:
    """Mail a new verification link (nothing for a verified address)."""
    user = signed_in_user()
    await resend_verification(user)
    return MessageOut(message=f"A new link is on its way to {user.email}."), 202


@bp.post("/email")
@security_scheme(SIGNED_IN)
@refuses(400, 401, 403, 429)
@validate_request(EmailChangeIn)
@validate_response(MessageOut, 202)
@login_required
@unverified_ok
async def api_change_email(data: EmailChangeIn) -> tuple[MessageOut, int]:
    """Mail a confirmation link to a new address; the account changes when it is followed."""
    new_email = await request_email_change(signed_in_user(), data.__dict__)
    return MessageOut(message=f"A confirmation link is on its way to {new_email}."), 202


@bp.delete("/me")
@sets_session_cookie
@security_scheme(SIGNED_IN)
@refuses(400, 401, 403, 429)
@validate_request(PasswordAgainIn)
@document_response(NoContent, 204)
@login_required
@unverified_ok
async def api_delete_me(data: PasswordAgainIn) -> Response:
    """Delete the account and everything of it; the session ends."""
    await delete_account(signed_in_user(), data.__dict__)
    return Response("", status=204)


@bp.get("/me/export")
@security_scheme(SIGNED_IN)
@refuses(401)
@validate_response(ExportOut, 200)
@login_required
@unverified_ok
async def api_export() -> dict[str, Any]:
    """The account's profile, sessions, security events and passkeys, without secrets."""
    return await export(signed_in_user())


@bp.post("/reauthenticate")
@security_scheme(SIGNED_IN)
@refuses(400, 401, 403, 429)
@validate_request(ReauthIn)
@document_response(NoContent, 204)
@login_required
@unverified_ok
async def api_reauthenticate(data: ReauthIn) -> Response:
    """Type the password again: sensitive actions need no password for REAUTH_WINDOW."""
    await reauthenticate(signed_in_user(), data.__dict__)
    return Response("", status=204)
