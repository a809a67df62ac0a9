"""The plumbing of WebAuthn ceremonies (SPEC §12): the relying party from PUBLIC_URL,
challenges kept in the server-side session (a few per ceremony, each for
CHALLENGE_LIFETIME seconds, used once), credential parsing that answers 400 to anything
malformed, and passkey names."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from quart import current_app
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_client_data_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
)

from . import clock
from .agents import describe
from .auth import server_session
from .errors import AppError, invalid_input
from .sessions import client_meta
from .store import NewEvent, Passkey, User

log = logging.getLogger(__name__)

CHALLENGES = "_passkey_challenges"  # session key: {ceremony: [[challenge, expires, user id]]}
CHALLENGE_LIFETIME = 300.0  # seconds a challenge may be answered in
CHALLENGES_KEPT = 3  # per ceremony: a few tabs may each have one pending
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


def remember_challenge(ceremony: str, challenge: bytes, user_id: int) -> None:
    """Keep a new challenge in the session; the oldest go past CHALLENGES_KEPT."""
    now = clock.now()
    session = server_session()
    kept = session.get(CHALLENGES)
    kept = dict(kept) if isinstance(kept, dict) else {}
    live = [e for e in _entries(kept.get(ceremony)) if e[1] > now]
    kept[ceremony] = [*live, [bytes_to_base64url(challenge), now + CHALLENGE_LIFETIME, user_id]][
        -CHALLENGES_KEPT:
    ]
    session[CHALLENGES] = kept


def take_challenge(ceremony: str, challenge: bytes, user_id: int) -> bool:
    """Use up `challenge` if this session issued it for the ceremony (and user) and it is
    still alive; True if so. Whatever the outcome, it can never be used again."""
    now = clock.now()
    session = server_session()
    kept = session.get(CHALLENGES)
    if not isinstance(kept, dict):
        return False
    given = bytes_to_base64url(challenge)
    entries = [e for e in _entries(kept.get(ceremony)) if e[1] > now]
    found = [e for e in entries if hmac.compare_digest(e[0], given)]
    rest = {key: value for key, value in kept.items() if key != ceremony and value}
    left = [e for e in entries if e not in found]
    if left:
        rest[ceremony] = left
    if rest:
        session[CHALLENGES] = rest
    else:
        session.pop(CHALLENGES, None)
    return any(e[2] == user_id for e in found)


def _entries(value: Any) -> list[list[Any]]:
    if not isinstance(value, list):
        return []
    return [
        e
        for e in value
        if isinstance(e, list)
        and len(e) == 3
        and isinstance(e[0], str)
        and isinstance(e[1], int | float)
        and isinstance(e[2], int)
    ]


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
    except MALFORMED:
        raise malformed from None
    return parsed, client_data.challenge


# names --------------------------------------------------------------------------------------


def clean_name(raw: Any, required: bool) -> str:
    """A passkey's name: trimmed, NFC, whitespace runs as one space, printable, at most
    NAME_MAX characters; "" if left out (and not `required`)."""
    problem = f"Please give a name of at most {NAME_MAX} characters, without control characters."
    if raw is None:
        raw = ""
    if not isinstance(raw, str) or len(raw) > 4 * NAME_MAX:  # bounded before normalising
        raise invalid_input({"name": problem})
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if len(name) > NAME_MAX or not name.isprintable():
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
