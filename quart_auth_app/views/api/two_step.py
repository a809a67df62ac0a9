"""Second factors over the API: the second step of a sign-in, and TOTP (SPEC §12)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import ConfigDict
from quart import Response
from quart_schema import document_response, security_scheme, validate_request, validate_response

from ...auth import login_required, signed_in_user
from ...factors import (
    begin_totp,
    confirm_totp,
    disable_totp,
    provisioning,
    regenerate_codes,
    verify_pending,
)
from ...lifecycle import reauth_required
from ...openapi import NoContent, sets_session_cookie
from .base import MAYBE_SIGNED_IN, SIGNED_IN, bp, refuses, user_out
from .models import UserOut, closed, doc, examples


@dataclass
class CodeIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples({"code": "123456"})
    code: Annotated[
        str,
        doc(
            "A 6-digit code from the authenticator app, or a recovery code (xxxx-xxxx-xxxx-xxxx).",
            minLength=1,
            maxLength=64,
        ),
    ]


@dataclass
class TotpSetupOut:
    """A new TOTP secret, on once a code from it is confirmed."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {
            "secret": "JBSWY3DPEHPK3PXP",
            "otpauth_uri": "otpauth://totp/quart_auth_app:ada%40example.com"
            "?secret=JBSWY3DPEHPK3PXP&issuer=quart_auth_app",
        }
    )
    secret: str
    otpauth_uri: str


@dataclass
class RecoveryCodesOut:
    """Ten single-use codes, shown this once."""

    __pydantic_config__: ClassVar[ConfigDict] = closed({"recovery_codes": ["abcd-efgh-jkmn-pqrs"]})
    recovery_codes: list[str]


@bp.post("/login/second-factor")
@sets_session_cookie
@security_scheme(MAYBE_SIGNED_IN)
@refuses(400, 401, 429)
@validate_request(CodeIn)
@validate_response(UserOut, 200)
async def api_second_factor(data: CodeIn) -> UserOut:
    """Finish a pending sign-in with a TOTP or recovery code; the token is rotated."""
    return user_out(await verify_pending(data.__dict__))


@bp.post("/2fa/totp")
@security_scheme(SIGNED_IN)
@refuses(401, 403, 409)
@validate_response(TotpSetupOut, 200)
@login_required
@reauth_required
async def api_totp_begin() -> TotpSetupOut:
    """Start turning TOTP on: the secret for the authenticator app."""
    user = signed_in_user()
    secret = await begin_totp(user)
    uri, _ = provisioning(user, secret)
    return TotpSetupOut(secret=secret, otpauth_uri=uri)


@bp.post("/2fa/totp/confirm")
@sets_session_cookie
@security_scheme(SIGNED_IN)
@refuses(400, 401, 409, 429)
@validate_request(CodeIn)
@validate_response(RecoveryCodesOut, 200)
@login_required
async def api_totp_confirm(data: CodeIn) -> RecoveryCodesOut:
    """Turn TOTP on with a code from the new secret; other sessions end."""
    return RecoveryCodesOut(recovery_codes=await confirm_totp(signed_in_user(), data.__dict__))


@bp.delete("/2fa/totp")
@sets_session_cookie
@security_scheme(SIGNED_IN)
@refuses(401, 403, 409)
@document_response(NoContent, 204)
@login_required
@reauth_required
async def api_totp_disable() -> Response:
    """Turn TOTP off; other sessions end."""
    await disable_totp(signed_in_user())
    return Response("", status=204)


@bp.post("/2fa/recovery-codes")
@security_scheme(SIGNED_IN)
@refuses(401, 403, 409)
@validate_response(RecoveryCodesOut, 200)
@login_required
@reauth_required
async def api_recovery_codes() -> RecoveryCodesOut:
    """New recovery codes; the old ones stop working."""
    return RecoveryCodesOut(recovery_codes=await regenerate_codes(signed_in_user()))
