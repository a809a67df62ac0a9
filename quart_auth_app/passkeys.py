"""Passkeys (WebAuthn, SPEC §12): add, list, rename and remove them; sign in with one.

The relying party and the origin come from PUBLIC_URL. Challenges are signed and carry
their expiry (CHALLENGE_LIFETIME seconds), so asking for one stores nothing; an answer that
verifies records its challenge, so each is answered once. Only user-verified, discoverable
credentials are asked for: a passkey is both factors, so signing in with one asks for nothing more.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    bytes_to_base64url,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from .auth import finish, login_user, mailer, server_session, store, throttle
from .errors import AppError
from .mail.messages import APP_NAME
from .metrics import sign_in as count_sign_in
from .passkey_ceremony import (
    CHALLENGE_LIFETIME,
    CREDENTIAL_ID,
    FAILED,
    LOGIN,
    MALFORMED,
    MAX_PASSKEYS,
    REGISTER,
    challenge_expiry,
    clean_name,
    default_name,
    descriptor,
    invalid_credential,
    new_challenge,
    parse_credential,
    passkey_event,
    relying_party,
    too_many,
    use_challenge,
    user_handle,
)
from .store import Outgoing, Passkey, User

log = logging.getLogger(__name__)


async def registration_options(user: User) -> dict[str, Any]:
    """Options for `navigator.credentials.create()` (WebAuthn Level 3 JSON): a discoverable,
    user-verified credential that none of the user's authenticators holds already."""
    existing = await store().select_passkeys_of_user(user.id)
    if len(existing) >= MAX_PASSKEYS:
        raise too_many()
    challenge = new_challenge(REGISTER, user_handle(user))
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
        exclude_credentials=[descriptor(p) for p in existing],
    )
    return _json(options)


def _json(options: Any) -> dict[str, Any]:
    return dict(json.loads(options_to_json(options)))


async def add_passkey(user: User, credential: Any, name: Any = None) -> Passkey:
    """Register the passkey `credential` (what `PublicKeyCredential.toJSON()` gives) under
    `name`; the epoch moves (other sessions end, this one carries on) and a notice is mailed."""
    wanted = clean_name(name, required=False)
    parsed, challenge = parse_credential(parse_registration_credential_json, credential)
    expires = challenge_expiry(REGISTER, challenge, user_handle(user))
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
    await use_challenge(challenge, expires)
    existing = await store().select_passkeys_of_user(user.id)
    if len(existing) >= MAX_PASSKEYS:
        raise too_many()
    now = time.time()
    passkey = Passkey(
        id=bytes_to_base64url(verified.credential_id),
        user_id=user.id,
        name=wanted or default_name(existing),
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
        store().insert_passkey(
            passkey, current.token_hash, passkey_event("passkey added"), notice, now
        )
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
            user.id,
            credential_id,
            current.token_hash,
            passkey_event("passkey removed"),
            time.time(),
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
    challenge = new_challenge(LOGIN)
    options = generate_authentication_options(
        rp_id=relying_party().id,
        challenge=challenge,
        timeout=int(CHALLENGE_LIFETIME * 1000),
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return _json(options)


async def login_with_passkey(credential: Any, remember: bool = False) -> User:
    """Sign in with a passkey (what `PublicKeyCredential.toJSON()` gives): a user-verified
    passkey is both factors. Failures are counted like wrong passwords (SPEC §7)."""
    parsed, challenge = parse_credential(parse_authentication_credential_json, credential)
    expires = challenge_expiry(LOGIN, challenge)
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
    await use_challenge(challenge, expires)  # a replayed answer stops here
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
    count_sign_in("ok")
    return user
