"""The plumbing of WebAuthn ceremonies (SPEC §12): the relying party from PUBLIC_URL,
signed challenges (each alive for CHALLENGE_LIFETIME seconds, answered once), credential
parsing that answers 400 to anything malformed, and passkey names."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from quart import current_app
from webauthn.helpers import (
    base64url_to_bytes,
    parse_client_data_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
)

from . import clock
from .agents import describe
from .auth import store
from .authenticator_cbor import check_cbor
from .devices import derive_key
from .errors import AppError, invalid_input
from .sessions import client_meta
from .store import NewEvent, Passkey, User
from .validation import bounded_nfc, showable

log = logging.getLogger(__name__)

CHALLENGE_LIFETIME = 300.0  # seconds a challenge may be answered in
REGISTER, LOGIN = "register", "login"
NAME_MAX = 64
MAX_PASSKEYS = 25  # per account: the list, and the exclusions sent with every registration
# A credential id is at most 1023 bytes (WebAuthn §5.1): 1364 base64url characters.
CREDENTIAL_ID = re.compile(r"[A-Za-z0-9_-]{1,1364}")
FAILED = "passkey sign-in failed"
# What py_webauthn lets out for malformed input besides its own errors: cbor2's and json's
# ValueErrors, binascii's, KeyError and TypeError from COSE maps, cryptography's.
MALFORMED = (
    WebAuthnException,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    InvalidSignature,
    UnsupportedAlgorithm,
)


@dataclass(frozen=True)
class RelyingParty:
    """Who passkeys are made for: the RP id (PUBLIC_URL's host) and the expected origin."""

    id: str
    origin: str


def relying_party() -> RelyingParty:
    """The relying party PUBLIC_URL names (never the request's Host)."""
    parts = urlsplit(str(current_app.config["PUBLIC_URL"]))
    host = (parts.hostname or "localhost").lower()
    scheme = parts.scheme.lower() or "https"
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(scheme):
        netloc = f"{netloc}:{parts.port}"
    return RelyingParty(host, f"{scheme}://{netloc}")


def user_handle(user: User) -> bytes:
    """The opaque WebAuthn user id of an account (no email, no bare row id: SQLite may give
    a deleted account's id to the next one, whose creation time differs)."""
    return hashlib.sha256(
        f"quart_auth_app passkey user {user.id} {user.created_at!r}".encode()
    ).digest()


def invalid_credential(
    message: str = "The passkey could not be verified. Please try again.",
) -> AppError:
    return AppError(400, "invalid_credential", message)


def challenge_expired() -> AppError:
    return AppError(
        400, "challenge_expired", "This passkey request has expired or was used. Please try again."
    )


def passkey_event(kind: str) -> NewEvent:
    agent, ip = client_meta()
    return NewEvent(kind, ip, agent, describe(agent))


# challenges ---------------------------------------------------------------------------------
# A challenge is NONCE random bytes, its expiry and a MAC over both, the ceremony and whom it
# is for, under a key derived from SECRET_KEY: asking for one stores nothing (a stranger's
# request costs no row), any node can judge it, and only an answer that verifies is recorded
# (store.use_challenge) so it works once.

NONCE = 16
_EXPIRY = 8
_MAC = 32


def new_challenge(ceremony: str, whom: bytes = b"") -> bytes:
    """A fresh challenge for `ceremony` (and, when adding a passkey, the account's handle)."""
    expires = int(clock.now() + CHALLENGE_LIFETIME) + 1
    body = secrets.token_bytes(NONCE) + expires.to_bytes(_EXPIRY, "big")
    return body + _mac(ceremony, whom, body)


def challenge_expiry(ceremony: str, challenge: bytes, whom: bytes = b"") -> int:
    """When `challenge` expires, if this app made it for the ceremony and `whom` and it is
    still alive; else the 400 `challenge_expired`. Costs one HMAC, reads nothing."""
    if len(challenge) == NONCE + _EXPIRY + _MAC:
        body, mac = challenge[: NONCE + _EXPIRY], challenge[NONCE + _EXPIRY :]
        expires = int.from_bytes(body[NONCE:], "big")
        if hmac.compare_digest(mac, _mac(ceremony, whom, body)) and expires > clock.now():
            return expires
    raise challenge_expired()


async def use_challenge(challenge: bytes, expires: int) -> None:
    """Record the answered challenge; the 400 `challenge_expired` if it was answered before
    (of two answers at once, one gets through)."""
    if not await store().use_challenge(hashlib.sha256(challenge).digest(), float(expires)):
        raise challenge_expired()


def _mac(ceremony: str, whom: bytes, body: bytes) -> bytes:
    signed = b"%s\x00%s\x00%s" % (ceremony.encode("ascii"), whom, body)
    return hmac.new(derive_key("passkey-challenge"), signed, hashlib.sha256).digest()


def parse_credential(parse: Callable[[dict[str, Any]], Any], credential: Any) -> tuple[Any, bytes]:
    """The credential parsed, and the challenge its client data answers (400 if malformed)."""
    malformed = invalid_credential("The passkey's answer is malformed.")
    if not isinstance(credential, dict) or not isinstance(credential.get("id"), str):
        raise malformed
    if not CREDENTIAL_ID.fullmatch(credential["id"]):
        raise malformed
    try:
        parsed = parse(credential)
        client_data = parse_client_data_json(parsed.response.client_data_json)
        check_cbor(parsed.response)
    except MALFORMED:
        raise malformed from None
    return parsed, client_data.challenge


# names --------------------------------------------------------------------------------------


def clean_name(raw: Any, required: bool) -> str:
    """A passkey's name: trimmed, NFC, whitespace runs as one space, showable as account
    names are (ZWNJ and ZWJ kept, controls and bidi overrides refused), at most NAME_MAX
    characters; "" if left out (and not `required`)."""
    problem = f"Please give a name of at most {NAME_MAX} characters, without control characters."
    if raw is None:
        raw = ""
    normalised = bounded_nfc(raw, NAME_MAX) if isinstance(raw, str) else None
    if normalised is None:  # not text, or too long to be worth normalising
        raise invalid_input({"name": problem})
    name = " ".join(normalised.split())
    if len(name) > NAME_MAX or not showable(name):
        raise invalid_input({"name": problem})
    if not name and required:
        raise invalid_input({"name": "Please enter a name."})
    return name


def default_name(existing: list[Passkey]) -> str:
    names = {p.name for p in existing}
    number = len(existing) + 1
    while f"Passkey {number}" in names:
        number += 1
    return f"Passkey {number}"


# managing passkeys --------------------------------------------------------------------------


def too_many() -> AppError:
    return AppError(
        400, "too_many_passkeys", f"An account can have at most {MAX_PASSKEYS} passkeys."
    )


def descriptor(passkey: Passkey) -> PublicKeyCredentialDescriptor:
    known = {t.value for t in AuthenticatorTransport}
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(passkey.id),
        transports=[AuthenticatorTransport(t) for t in passkey.transports if t in known],
    )
