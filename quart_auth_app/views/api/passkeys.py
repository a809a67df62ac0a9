"""Passkeys over the API: register, list, remove, sign in (SPEC §12).

Options are WebAuthn Level 3's JSON forms, for `PublicKeyCredential.parseCreationOptionsFromJSON`
and `parseRequestOptionsFromJSON`; a `credential` is what `PublicKeyCredential.toJSON()` gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, WithJsonSchema
from quart import Response
from quart_schema import document_response, security_scheme, validate_request, validate_response
from werkzeug.routing import BaseConverter

from ...auth import login_required, signed_in_user
from ...lifecycle import reauth_required
from ...openapi import NoContent, sets_session_cookie
from ...passkeys import (
    NAME_MAX,
    add_passkey,
    list_passkeys,
    login_options,
    login_with_passkey,
    registration_options,
    remove_passkey,
)
from ...store import Passkey
from .base import MAYBE_SIGNED_IN, SIGNED_IN, bp, refuses, user_out
from .models import REMEMBER, PasskeyOut, UserOut, closed, doc, examples


class PasskeyIdConverter(BaseConverter):
    """A credential id (base64url), but not the name of a sibling route."""

    regex = r"(?!(?:login|register)\Z)[A-Za-z0-9_-]{1,1364}"


bp.record_once(lambda state: state.app.url_map.converters.update(passkey_id=PasskeyIdConverter))

B64URL = "^[A-Za-z0-9_-]*$"
CREDENTIAL_ID = "AXk3cWbCQdLZ9PbnQkpwFfNdq4Bz5xLR3rOq8o8Yx2U"
Base64Url = Annotated[str, doc("Base64url, without padding.", pattern=B64URL)]


def _credential_schema(response: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What `PublicKeyCredential.toJSON()` gives; other members are ignored.",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,1364}$"},
            "rawId": {"type": "string", "pattern": B64URL},
            "type": {"const": "public-key"},
            "response": {
                "type": "object",
                "properties": response,
                "required": required,
            },
        },
        "required": ["id", "rawId", "type", "response"],
    }


B64 = {"type": "string", "pattern": B64URL}
REGISTRATION = _credential_schema(
    {
        "clientDataJSON": B64,
        "attestationObject": B64,
        "transports": {"type": "array", "items": {"type": "string"}},
    },
    ["clientDataJSON", "attestationObject"],
)
ASSERTION = _credential_schema(
    {
        "clientDataJSON": B64,
        "authenticatorData": B64,
        "signature": B64,
        "userHandle": {"anyOf": [B64, {"type": "null"}]},
    },
    ["clientDataJSON", "authenticatorData", "signature"],
)
PasskeyName = Annotated[
    str,
    doc(
        f"Trimmed, NFC-normalised, whitespace runs made one space: at most {NAME_MAX} "
        "printable characters then. Empty or absent: `Passkey N`.",
        maxLength=NAME_MAX,
    ),
]


@dataclass
class PasskeyIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples(
        {
            "credential": {
                "id": CREDENTIAL_ID,
                "rawId": CREDENTIAL_ID,
                "type": "public-key",
                "response": {
                    "clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIn0",
                    "attestationObject": "o2NmbXRkbm9uZQ",
                },
            },
            "name": "Laptop",
        }
    )
    credential: Annotated[dict[str, Any], WithJsonSchema(REGISTRATION)]
    name: PasskeyName | None = None


@dataclass
class PasskeyLoginIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = examples(
        {
            "credential": {
                "id": CREDENTIAL_ID,
                "rawId": CREDENTIAL_ID,
                "type": "public-key",
                "response": {
                    "clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0",
                    "authenticatorData": "SZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2MFAAAAAQ",
                    "signature": "MEUCIQ",
                },
            }
        }
    )
    credential: Annotated[dict[str, Any], WithJsonSchema(ASSERTION)]
    remember: Annotated[bool, WithJsonSchema(REMEMBER)] = False


@dataclass
class RelyingPartyOut:
    name: str
    id: Annotated[str, doc("PUBLIC_URL's host.")]


@dataclass
class UserEntityOut:
    id: Annotated[str, doc("The account's opaque user handle, base64url.", pattern=B64URL)]
    name: Annotated[str, doc("The account's email.")]
    displayName: Annotated[str, doc("The account's name.")]


@dataclass
class CredentialParameterOut:
    type: Literal["public-key"]
    alg: Annotated[int, doc("A COSE algorithm: -8 EdDSA, -7 ES256, -257 RS256.")]


@dataclass
class DescriptorOut:
    id: Base64Url
    type: Literal["public-key"]
    transports: list[str] = field(default_factory=list)


@dataclass
class SelectionOut:
    residentKey: Literal["required"]
    requireResidentKey: Literal[True]
    userVerification: Literal["required"]


CHALLENGE = doc(
    "Single-use, kept by the server in this session for 5 minutes.", pattern=B64URL, minLength=43
)
TIMEOUT = doc("Milliseconds: the challenge's lifetime.", minimum=1)


@dataclass
class CreationOptionsOut:
    """`PublicKeyCredentialCreationOptionsJSON`: a discoverable, user-verified credential
    that none of the account's passkeys is."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {
            "rp": {"name": "quart_auth_app", "id": "example.com"},
            "user": {
                "id": "4kQvH6Hk8p3rFJdD9cX1pN7lJ0sDf2Yt5kQm9rWq3ZE",
                "name": "ada@example.com",
                "displayName": "Ada",
            },
            "challenge": "q3Yx0H5bQ2yq3m1ZLkV0wJq3Yx0H5bQ2yq3m1ZLkV0w",
            "pubKeyCredParams": [
                {"type": "public-key", "alg": -8},
                {"type": "public-key", "alg": -7},
                {"type": "public-key", "alg": -257},
            ],
            "timeout": 300000,
            "excludeCredentials": [],
            "authenticatorSelection": {
                "residentKey": "required",
                "requireResidentKey": True,
                "userVerification": "required",
            },
            "attestation": "none",
        }
    )
    rp: RelyingPartyOut
    user: UserEntityOut
    challenge: Annotated[str, CHALLENGE]
    pubKeyCredParams: list[CredentialParameterOut]
    timeout: Annotated[int, TIMEOUT]
    excludeCredentials: Annotated[
        list[DescriptorOut], doc("The account's passkeys: an authenticator holding one says so.")
    ]
    authenticatorSelection: SelectionOut
    attestation: Literal["none"]


@dataclass
class RequestOptionsOut:
    """`PublicKeyCredentialRequestOptionsJSON`: any passkey of this site (discoverable
    credentials: `allowCredentials` is empty), user verification required."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {
            "challenge": "q3Yx0H5bQ2yq3m1ZLkV0wJq3Yx0H5bQ2yq3m1ZLkV0w",
            "timeout": 300000,
            "rpId": "example.com",
            "allowCredentials": [],
            "userVerification": "required",
        }
    )
    challenge: Annotated[str, CHALLENGE]
    timeout: Annotated[int, TIMEOUT]
    rpId: Annotated[str, doc("PUBLIC_URL's host.")]
    allowCredentials: Annotated[list[DescriptorOut], doc("Always empty.", maxItems=0)]
    userVerification: Literal["required"]


@dataclass
class PasskeysOut:
    """The account's passkeys, oldest first (names and dates only)."""

    __pydantic_config__: ClassVar[ConfigDict] = closed(
        {
            "passkeys": [
                {
                    "id": CREDENTIAL_ID,
                    "name": "Laptop",
                    "created_at": 1767225600.0,
                    "last_used_at": None,
                }
            ]
        }
    )
    passkeys: list[PasskeyOut]


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

    The challenge is kept in this session: an anonymous client gets a session cookie here, to
    send back with POST /api/passkeys/login.
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
