"""Passkeys over the API: register, list, remove, sign in (SPEC §12).

Options are WebAuthn Level 3's JSON forms, for `PublicKeyCredential.parseCreationOptionsFromJSON`
and `parseRequestOptionsFromJSON`; a `credential` is what `PublicKeyCredential.toJSON()` gives.
"""

from __future__ import annotations

from typing import Any

from quart import Response
from quart_schema import document_response, security_scheme, validate_request, validate_response
from werkzeug.routing import BaseConverter

from ...auth import login_required, signed_in_user
from ...lifecycle import reauth_required
from ...openapi import NoContent, sets_session_cookie
from ...passkeys import (
    add_passkey,
    list_passkeys,
    login_options,
    login_with_passkey,
    registration_options,
    remove_passkey,
)
from ...store import Passkey
from .account_models import PasskeyOut
from .base import MAYBE_SIGNED_IN, SIGNED_IN, bp, refuses, user_out
from .models import UserOut
from .passkey_models import (
    CreationOptionsOut,
    PasskeyIn,
    PasskeyLoginIn,
    PasskeysOut,
    RequestOptionsOut,
)


class PasskeyIdConverter(BaseConverter):
    """A credential id (base64url), but not the name of a sibling route."""

    regex = r"(?!(?:login|register)\Z)[A-Za-z0-9_-]{1,1364}"


bp.record_once(lambda state: state.app.url_map.converters.update(passkey_id=PasskeyIdConverter))


def passkey_out(passkey: Passkey) -> PasskeyOut:
    return PasskeyOut(
        id=passkey.id,
        name=passkey.name,
        created_at=passkey.created_at,
        last_used_at=passkey.last_used_at,
    )


@bp.post("/passkeys/register/options")
@security_scheme(SIGNED_IN)
@refuses(400, 401, 403)
@validate_response(CreationOptionsOut, 200)
@login_required
@reauth_required
async def api_passkey_options() -> dict[str, Any]:
    """Options for `navigator.credentials.create()`.

    Needs the password typed within REAUTH_WINDOW (else 403 `reauthentication_required`).
    """
    return await registration_options(signed_in_user())


@bp.post("/passkeys")
@sets_session_cookie
@security_scheme(SIGNED_IN)
@refuses(400, 401, 403)
@validate_request(PasskeyIn)
@validate_response(PasskeyOut, 201)
@login_required
@reauth_required
async def api_add_passkey(data: PasskeyIn) -> tuple[PasskeyOut, int]:
    """Add the passkey the browser made from the options.

    Needs the password typed within REAUTH_WINDOW. Every other session ends, this one gets a
    new cookie, and a notice is mailed.
    """
    passkey = await add_passkey(signed_in_user(), data.credential, data.name)
    return passkey_out(passkey), 201


@bp.get("/passkeys")
@security_scheme(SIGNED_IN)
@refuses(401)
@validate_response(PasskeysOut, 200)
@login_required
async def api_passkeys() -> PasskeysOut:
    """The account's passkeys."""
    return PasskeysOut(passkeys=[passkey_out(p) for p in await list_passkeys(signed_in_user())])


@bp.delete("/passkeys/<passkey_id:passkey_id>")
@sets_session_cookie
@security_scheme(SIGNED_IN)
@refuses(401, 403, 404)
@document_response(NoContent, 204)
@login_required
@reauth_required
async def api_remove_passkey(passkey_id: str) -> Response:
    """Remove one of the account's passkeys.

    Needs the password typed within REAUTH_WINDOW; 404 for an id that is not the account's.
    Every other session ends, this one gets a new cookie.
    """
    await remove_passkey(signed_in_user(), passkey_id)
    return Response("", status=204)


@bp.post("/passkeys/login/options")
@security_scheme(MAYBE_SIGNED_IN)
@validate_response(RequestOptionsOut, 200)
async def api_passkey_login_options() -> dict[str, Any]:
    """Options for `navigator.credentials.get()`.

    The challenge is signed and expires in 5 minutes; nothing is stored and no cookie is set,
    so any client may ask. Its answer works once.
    """
    return login_options()


@bp.post("/passkeys/login")
@sets_session_cookie
@refuses(400, 429)
@validate_request(PasskeyLoginIn)
@validate_response(UserOut, 200)
async def api_passkey_login(data: PasskeyLoginIn) -> UserOut:
    """Sign in with a passkey; the response sets the session cookie.

    A user-verified passkey is both factors: no second step follows. Failures count like wrong
    passwords (429 past the limits).
    """
    user = await login_with_passkey(data.credential, data.remember)
    return user_out(user)
