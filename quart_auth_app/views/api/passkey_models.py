"""The API's passkey models: WebAuthn Level 3's JSON forms of options and credentials
(SPEC §12)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, WithJsonSchema

from ...passkey_ceremony import NAME_MAX
from .account_models import PasskeyOut
from .models import REMEMBER, closed, doc, examples

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
    "Signed by the server, alive for 5 minutes, answered once.", pattern=B64URL, minLength=43
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
