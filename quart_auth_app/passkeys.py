"""Passkeys (WebAuthn, SPEC §12): add, list, rename and remove them; sign in with one.

The relying party and the origin come from PUBLIC_URL. Challenges live in the server-side
session (they never reach a cookie), at most a few per ceremony, each for
CHALLENGE_LIFETIME seconds and used once. Only user-verified, discoverable credentials are
asked for: a passkey is both factors, so signing in with one asks for nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from quart import current_app
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from .agents import describe
from .auth import finish, login_user, mailer, server_session, store, throttle
from .errors import AppError, invalid_input
from .mail.messages import APP_NAME
from .sessions import client_meta
from .store import NewEvent, Outgoing, Passkey, User

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


def _expired() -> AppError:
    return AppError(
        400, "challenge_expired", "This passkey request has expired or was used. Please try again."
    )


def _event(kind: str) -> NewEvent:
    agent, ip = client_meta()
    return NewEvent(kind, ip, agent, describe(agent))


# challenges ---------------------------------------------------------------------------------


def _remember(ceremony: str, challenge: bytes, user_id: int) -> None:
    """Keep a new challenge in the session; the oldest go past CHALLENGES_KEPT."""
    now = time.time()
    session = server_session()
    kept = session.get(CHALLENGES)
    kept = dict(kept) if isinstance(kept, dict) else {}
    live = [e for e in _entries(kept.get(ceremony)) if e[1] > now]
    kept[ceremony] = [*live, [bytes_to_base64url(challenge), now + CHALLENGE_LIFETIME, user_id]][
        -CHALLENGES_KEPT:
    ]
    session[CHALLENGES] = kept


def _take(ceremony: str, challenge: bytes, user_id: int) -> bool:
    """Use up `challenge` if this session issued it for the ceremony (and user) and it is
    still alive; True if so. Whatever the outcome, it can never be used again."""
    now = time.time()
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


def _parse(parse: Callable[[dict[str, Any]], Any], credential: Any) -> tuple[Any, bytes]:
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


def _default_name(existing: list[Passkey]) -> str:
    names = {p.name for p in existing}
    number = len(existing) + 1
    while f"Passkey {number}" in names:
        number += 1
    return f"Passkey {number}"


# managing passkeys --------------------------------------------------------------------------


def _too_many() -> AppError:
    return AppError(
        400, "too_many_passkeys", f"An account can have at most {MAX_PASSKEYS} passkeys."
    )


def _descriptor(passkey: Passkey) -> PublicKeyCredentialDescriptor:
    known = {t.value for t in AuthenticatorTransport}
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(passkey.id),
        transports=[AuthenticatorTransport(t) for t in passkey.transports if t in known],
    )


async def registration_options(user: User) -> dict[str, Any]:
    """Options for `navigator.credentials.create()` (WebAuthn Level 3 JSON): a discoverable,
    user-verified credential that none of the user's authenticators holds already."""
    existing = await store().select_passkeys_of_user(user.id)
    if len(existing) >= MAX_PASSKEYS:
        raise _too_many()
    challenge = secrets.token_bytes(32)
    options = generate_registration_options(
        rp_id=relying_party().id,
        rp_name=APP_NAME,
        user_id=user_handle(user),
        user_name=user.email,
        user_display_name=user.name,
        challenge=challenge,
        timeout=int(CHALLENGE_LIFETIME * 1000),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[_descriptor(p) for p in existing],
    )
    _remember(REGISTER, challenge, user.id)
    return _json(options)


def _json(options: Any) -> dict[str, Any]:
    return dict(json.loads(options_to_json(options)))


async def add_passkey(user: User, credential: Any, name: Any = None) -> Passkey:
    """Register the passkey `credential` (what `PublicKeyCredential.toJSON()` gives) under
    `name`; the epoch moves (other sessions end, this one carries on) and a notice is mailed."""
    wanted = clean_name(name, required=False)
    parsed, challenge = _parse(parse_registration_credential_json, credential)
    if not _take(REGISTER, challenge, user.id):
        raise _expired()
    rp = relying_party()
    try:
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            require_user_verification=True,
        )
    except MALFORMED as exc:
        log.info("passkey registration refused: %r", str(exc))  # %r: the origin is sent
        raise invalid_credential() from None
    if len(verified.credential_id) > 1023:
        raise invalid_credential("The passkey's id is too long.")
    existing = await store().select_passkeys_of_user(user.id)
    if len(existing) >= MAX_PASSKEYS:
        raise _too_many()
    now = time.time()
    passkey = Passkey(
        id=bytes_to_base64url(verified.credential_id),
        user_id=user.id,
        name=wanted or _default_name(existing),
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=[t.value for t in parsed.response.transports or []],
        created_at=now,
    )
    notice = Outgoing(
        "passkey_added", user.email, {"name": user.name, "passkey_name": passkey.name}
    )
    current = server_session()
    changed = await finish(
        store().insert_passkey(passkey, current.token_hash, _event("passkey added"), notice, now)
    )
    if changed is None:
        raise invalid_credential("This passkey is registered already.")
    mailer().wake()
    current.rotate(changed)
    return passkey


async def list_passkeys(user: User) -> list[Passkey]:
    """The user's passkeys, oldest first."""
    return await store().select_passkeys_of_user(user.id)


async def rename_passkey(user: User, credential_id: str, name: Any) -> str:
    """Give one of the user's passkeys a new name (404 if it is not theirs); the name."""
    new_name = clean_name(name, required=True)
    if not CREDENTIAL_ID.fullmatch(credential_id) or not await store().rename_passkey(
        user.id, credential_id, new_name
    ):
        raise _no_such_passkey()
    return new_name


async def remove_passkey(user: User, credential_id: str) -> None:
    """Remove one of the user's passkeys (404 if it is not theirs); other sessions end."""
    if not CREDENTIAL_ID.fullmatch(credential_id):
        raise _no_such_passkey()
    current = server_session()
    changed = await finish(
        store().delete_passkey(
            user.id, credential_id, current.token_hash, _event("passkey removed"), time.time()
        )
    )
    if changed is None:
        raise _no_such_passkey()
    current.rotate(changed)


def _no_such_passkey() -> AppError:
    return AppError(404, "not_found", "There is no such passkey.")


async def export_passkeys(user: User) -> list[dict[str, Any]]:
    """The user's passkeys for an export: names and dates, no key material."""
    return [
        {"id": p.id, "name": p.name, "created_at": p.created_at, "last_used_at": p.last_used_at}
        for p in await list_passkeys(user)
    ]


# signing in ---------------------------------------------------------------------------------


def login_options() -> dict[str, Any]:
    """Options for `navigator.credentials.get()`: any discoverable credential of this site
    (empty allowCredentials), user verification required."""
    challenge = secrets.token_bytes(32)
    options = generate_authentication_options(
        rp_id=relying_party().id,
        challenge=challenge,
        timeout=int(CHALLENGE_LIFETIME * 1000),
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    _remember(LOGIN, challenge, 0)
    return _json(options)


async def login_with_passkey(credential: Any, remember: bool = False) -> User:
    """Sign in with a passkey (what `PublicKeyCredential.toJSON()` gives): a user-verified
    passkey is both factors. Failures are counted like wrong passwords (SPEC §7)."""
    parsed, challenge = _parse(parse_authentication_credential_json, credential)
    if not _take(LOGIN, challenge, 0):
        raise _expired()
    passkey = await store().select_passkey(parsed.id)
    user = await store().select_user_by_id(passkey.user_id) if passkey else None
    if passkey is None or user is None:
        # No account to count against: the network is (and a key of this id alone).
        await throttle().check_signin(f"passkey:{parsed.id}", None, FAILED)
        raise invalid_credential("This passkey is not registered here. Sign in another way.")
    attempt = await throttle().check_signin(user.email, user, FAILED)
    rp = relying_party()
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=passkey.public_key,
            credential_current_sign_count=0,  # the counter is judged below, to say why
            require_user_verification=True,
        )
    except MALFORMED as exc:
        log.info("passkey sign-in refused: %r", str(exc))
        raise invalid_credential() from None
    handle = parsed.response.user_handle
    if handle is not None and not hmac.compare_digest(handle, user_handle(user)):
        raise invalid_credential()
    new_count = verified.new_sign_count
    if (new_count or passkey.sign_count) and new_count <= passkey.sign_count:
        log.warning("passkey of user %s: signature counter did not increase", user.id)
        raise AppError(
            400,
            "cloned_authenticator",
            "This passkey's signature counter went backwards: it may have been copied. "
            "Sign in another way and remove it from your account.",
        )
    if not await store().use_passkey(passkey.id, passkey.sign_count, new_count, time.time()):
        raise invalid_credential()  # another sign-in used it meanwhile
    await throttle().succeeded(attempt)
    server_session().end_pending()  # a password step left waiting for its code is moot now
    await login_user(user, remember)
    return user
