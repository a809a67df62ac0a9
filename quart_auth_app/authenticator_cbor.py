"""What passkey answers may hold (SPEC §7, §12). py_webauthn decodes authenticatorData and
attestationObject with every extension of cbor2 and encodes keys and extensions again. So
before it sees them, they must be CBOR as authenticators write it (CTAP2): at most CBOR_MAX
bytes, definite lengths, no tags, maps keyed by integers or text, CBOR_DEPTH levels at most.
Value sharing (tags 28, 29) would re-encode exponentially, bignums and their decimal,
bigfloat and regex tags cost more than their size, and a map's keys chosen to hash alike
make it quadratic."""

from __future__ import annotations

from typing import Any

import cbor2

CBOR_MAX = 16384
CBOR_DEPTH = 16
_ATTESTED = 37  # authenticatorData up to its attested credential data: rpIdHash, flags, count
_AT, _ED = 0x40, 0x80
_MAP_KEYS = (0, 1, 3)  # unsigned and negative integers, text


def check_cbor(response: Any) -> None:
    """Refuse (ValueError) CBOR in the response that is not as authenticators write it."""
    attestation = getattr(response, "attestation_object", None)
    if attestation is not None:
        _plain_cbor(attestation, 0, len(attestation))
        try:
            decoded = cbor2.loads(attestation)  # plain, so as cheap as its size
        except cbor2.CBORError as exc:  # not a ValueError: text that is not UTF-8, say
            raise ValueError("attestationObject is not CBOR") from exc
        auth_data = decoded.get("authData") if isinstance(decoded, dict) else None
    else:
        auth_data = getattr(response, "authenticator_data", None)
    if isinstance(auth_data, bytes) and len(auth_data) > _ATTESTED:
        at = _ATTESTED
        if auth_data[32] & _AT:
            at += 18 + int.from_bytes(auth_data[at + 16 : at + 18], "big")
        _plain_cbor(auth_data, at, len(auth_data))


def _plain_cbor(data: bytes, at: int, end: int) -> None:
    """Walk the CBOR items in data[at:end] (ValueError unless plain, as above)."""
    if len(data) > CBOR_MAX:
        raise ValueError("CBOR too long")
    while at < end:
        at = _item(data, at, 0)


def _item(data: bytes, at: int, depth: int) -> int:
    """Where the plain CBOR item at `at` ends."""
    if depth > CBOR_DEPTH or at >= len(data):
        raise ValueError("CBOR too deep or cut short")
    major, info = data[at] >> 5, data[at] & 31
    at += 1
    if info >= 28 or major == 6:  # indefinite lengths, reserved values, tags
        raise ValueError("CBOR not as authenticators write it")
    size = 1 << (info - 24) if info >= 24 else 0
    argument = int.from_bytes(data[at : at + size], "big") if size else info
    at += size
    if major in (2, 3):
        at += argument
    elif major == 4:
        for _ in range(min(argument, len(data))):
            at = _item(data, at, depth + 1)
    elif major == 5:
        for _ in range(min(argument, len(data))):
            if at >= len(data) or data[at] >> 5 not in _MAP_KEYS:
                raise ValueError("CBOR map key not an integer or text")
            at = _item(data, _item(data, at, depth + 1), depth + 1)
    if at > len(data) or (major in (4, 5) and argument > len(data)):
        raise ValueError("CBOR cut short")
    return at
