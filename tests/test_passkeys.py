"""Passkeys (SPEC §12) against a software authenticator, on both engines, with real mail.

The authenticator below is what a platform authenticator does, written out: an EC P-256
key per credential, authenticatorData with the UP and UV flags (and attested credential
data when registering), a CBOR attestationObject of format "none", clientDataJSON naming
the challenge and the origin, and ES256 signatures over authenticatorData and the client
data's hash. Everything it sends goes through the real API, session store and throttle.
"""

# ruff: noqa: F811
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, cast

import cbor2
import pytest
from conftest import PASSWORD
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from dbrows import row_counts, rows, settle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import Quart
from quart.testing import QuartClient
from smtp import MailServer, mail_server  # noqa: F401
from test_api import error_body

from quart_auth_app.passkey_ceremony import CHALLENGE_LIFETIME, NONCE
from quart_auth_app.sessions import PROVED_AT, hash_token
from quart_auth_app.store import Store, User
from quart_auth_app.testing import Clock, authenticated_client, create_user, enable_totp

PUBLIC_URL = "https://auth.example.test:8443"
RP_ID = "auth.example.test"
ORIGIN = "https://auth.example.test:8443"
REAUTH_WINDOW = 60
ACCOUNT_FAILURES = 3
ADDRESS_FAILURES = 6
ADDED = "A passkey was added to your account"
UP, UV, AT = 0x01, 0x04, 0x40


@pytest.fixture
def config(config: dict[str, Any], mail_server: MailServer) -> dict[str, Any]:
    return {
        **config,
        "MAIL_URL": mail_server.url,
        "MAIL_POLL_INTERVAL": 0.05,
        "PUBLIC_URL": PUBLIC_URL,
        "REAUTH_WINDOW": REAUTH_WINDOW,
        "THROTTLE_ACCOUNT_FAILURES": ACCOUNT_FAILURES,
        "THROTTLE_ADDRESS_FAILURES": ADDRESS_FAILURES,
    }


# --- a software authenticator ------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Authenticator:
    """One discoverable credential, made and used the way a platform authenticator does."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    counter: int = 0
    user_handle: str | None = None

    @property
    def id(self) -> str:
        return b64(self.credential_id)

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def auth_data(self, rp_id: str, flags: int, attested: bool = False) -> bytes:
        data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags])
        data += self.counter.to_bytes(4, "big")
        if attested:
            data += bytes(16) + len(self.credential_id).to_bytes(2, "big") + self.credential_id
            data += self.cose_key()
        return data

    @staticmethod
    def client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}
        ).encode()

    def create(
        self,
        options: dict[str, Any],
        origin: str = ORIGIN,
        rp_id: str | None = None,
        verified: bool = True,
    ) -> dict[str, Any]:
        """navigator.credentials.create() with `options`, as toJSON() gives it."""
        self.user_handle = options["user"]["id"]
        flags = UP | AT | (UV if verified else 0)
        auth_data = self.auth_data(rp_id or options["rp"]["id"], flags, attested=True)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self.client_data("webauthn.create", options["challenge"], origin)
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {"credProps": {"rk": True}},
            "response": {
                "clientDataJSON": b64(client_data),
                "attestationObject": b64(attestation),
                "transports": ["internal", "hybrid"],
            },
        }

    def get(
        self,
        options: dict[str, Any],
        origin: str = ORIGIN,
        rp_id: str | None = None,
        verified: bool = True,
        step: int = 1,
    ) -> dict[str, Any]:
        """navigator.credentials.get() with `options`; the counter moves on by `step`."""
        self.counter += step
        auth_data = self.auth_data(rp_id or options["rpId"], UP | (UV if verified else 0))
        client_data = self.client_data("webauthn.get", options["challenge"], origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return {
            "id": self.id,
            "rawId": self.id,
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64(client_data),
                "authenticatorData": b64(auth_data),
                "signature": b64(signature),
                "userHandle": self.user_handle,
            },
        }


# --- helpers -----------------------------------------------------------------------------


def store(app: Quart) -> Store:
    return app.extensions["auth_store"]  # type: ignore[no-any-return]


def browser(app: Quart) -> QuartClient:
    return cast("QuartClient", app.test_client())


def cookie(client: QuartClient) -> str:
    return next(str(c.value) for c in client.cookie_jar or [] if c.name == "session")


async def session_data(app: Quart, client: QuartClient) -> dict[str, Any]:
    await settle(app)
    record = await store(app).select_session_by_hash(hash_token(cookie(client)))
    assert record is not None
    return record.data


async def set_session_data(app: Quart, client: QuartClient, changed: dict[str, Any]) -> None:
    """Write the client's session data as a later request would read it."""
    await settle(app)
    assert await store(app).merge_session_data(hash_token(cookie(client)), changed, [], time.time())


async def proved(app: Quart, client: QuartClient, seconds_ago: float) -> None:
    """Make the client's session have last proved its owner `seconds_ago` seconds ago."""
    await set_session_data(app, client, {PROVED_AT: time.time() - seconds_ago})


async def signed_in(app: Quart, user: User) -> QuartClient:
    """A client signed in as `user` that has just typed the password again."""
    client = await authenticated_client(app, user)
    response = await client.post("/api/reauthenticate", json={"password": PASSWORD})
    assert response.status_code == 204
    return client


async def is_signed_in(client: QuartClient) -> bool:
    status = (await client.get("/api/me")).status_code
    assert status in (200, 401)
    return status == 200


async def register(client: QuartClient, authenticator: Authenticator, **body: Any) -> Any:
    """Ask for creation options, make the credential, send it; the answer to the last."""
    response = await client.post("/api/passkeys/register/options")
    assert response.status_code == 200, await response.get_data(as_text=True)
    credential = authenticator.create(await response.get_json())
    return await client.post("/api/passkeys", json={"credential": credential, **body})


async def added(client: QuartClient, authenticator: Authenticator, **body: Any) -> dict[str, Any]:
    response = await register(client, authenticator, **body)
    assert response.status_code == 201, await response.get_data(as_text=True)
    return await response.get_json()  # type: ignore[no-any-return]


async def login_options(client: QuartClient) -> dict[str, Any]:
    response = await client.post("/api/passkeys/login/options")
    assert response.status_code == 200
    return await response.get_json()  # type: ignore[no-any-return]


async def passkey_login(client: QuartClient, credential: dict[str, Any]) -> Any:
    return await client.post("/api/passkeys/login", json={"credential": credential})


async def sign_in_with(app: Quart, authenticator: Authenticator, **get: Any) -> Any:
    """A fresh browser signs in with the authenticator; the login answer and the browser."""
    client = browser(app)
    options = await login_options(client)
    return await passkey_login(client, authenticator.get(options, **get)), client


def events(app: Quart, user: User, kind: str) -> int:
    return len(rows(app, "SELECT 1 FROM events WHERE user_id = ? AND kind = ?", user.id, kind))


@pytest.fixture
async def ada(app: Quart, user: User) -> QuartClient:
    """Ada, signed in, with a fresh proof of identity."""
    return await signed_in(app, user)


@pytest.fixture
async def key(ada: QuartClient) -> Authenticator:
    """Ada's registered passkey."""
    authenticator = Authenticator()
    await added(ada, authenticator)
    return authenticator


# --- registration --------------------------------------------------------------------------


async def test_registration_options_ask_for_a_discoverable_verified_credential(
    app: Quart, ada: QuartClient, user: User
) -> None:
    options = await (await ada.post("/api/passkeys/register/options")).get_json()
    assert options["rp"] == {"id": RP_ID, "name": "quart_auth_app"}
    assert options["user"]["name"] == user.email and options["user"]["displayName"] == "Ada"
    handle = unb64(options["user"]["id"])  # opaque: neither the email nor the row id
    assert len(handle) == 32 and user.email.encode() not in handle
    assert handle not in (str(user.id).encode(), user.id.to_bytes(8, "big"))
    again = await (await ada.post("/api/passkeys/register/options")).get_json()
    assert again["user"]["id"] == options["user"]["id"]  # the same account, the same handle
    assert again["challenge"] != options["challenge"]
    assert options["authenticatorSelection"] == {
        "residentKey": "required",
        "requireResidentKey": True,
        "userVerification": "required",
    }
    assert options["attestation"] == "none" and options["excludeCredentials"] == []
    assert {p["alg"] for p in options["pubKeyCredParams"]} >= {-7, -257}
    assert len(unb64(options["challenge"])) >= 32
    # the challenge is not kept anywhere: it is signed, and no cookie carries it
    assert options["challenge"] not in json.dumps(await session_data(app, ada))
    assert not [c for c in ada.cookie_jar or [] if options["challenge"] in str(c.value)]


async def test_register_list_and_the_users_existing_credentials_are_excluded(
    app: Quart, ada: QuartClient
) -> None:
    first, second = Authenticator(), Authenticator()
    body = await added(ada, first)
    assert set(body) == {"id", "name", "created_at", "last_used_at"}
    assert body["id"] == first.id and body["name"] == "Passkey 1"
    assert body["last_used_at"] is None and abs(body["created_at"] - time.time()) < 60
    assert (await added(ada, second, name="  Work\u00a0 laptop "))["name"] == "Work laptop"
    listed = (await (await ada.get("/api/passkeys")).get_json())["passkeys"]
    assert [(p["id"], p["name"]) for p in listed] == [
        (first.id, "Passkey 1"),
        (second.id, "Work laptop"),
    ]
    options = await (await ada.post("/api/passkeys/register/options")).get_json()
    excluded = options["excludeCredentials"]
    assert [(e["id"], e["type"]) for e in excluded] == [
        (first.id, "public-key"),
        (second.id, "public-key"),
    ]
    assert excluded[0]["transports"] == ["internal", "hybrid"]
    stored = rows(app, "SELECT id, sign_count, transports FROM passkeys ORDER BY created_at")
    assert [(r[0], r[1], json.loads(r[2])) for r in stored] == [
        (first.id, 0, ["internal", "hybrid"]),
        (second.id, 0, ["internal", "hybrid"]),
    ]


async def test_adding_and_removing_need_a_recent_password(app: Quart, user: User) -> None:
    client = await authenticated_client(app, user)  # signed in, but no password typed yet
    error = await error_body(
        await client.post("/api/passkeys/register/options"), 403, "reauthentication_required"
    )
    assert "reauthenticate" in error["message"]
    await client.post("/api/reauthenticate", json={"password": PASSWORD})
    options = await (await client.post("/api/passkeys/register/options")).get_json()
    authenticator = Authenticator()
    credential = authenticator.create(options)
    await proved(app, client, REAUTH_WINDOW + 1)  # the window closed meanwhile
    await error_body(
        await client.post("/api/passkeys", json={"credential": credential}),
        403,
        "reauthentication_required",
    )
    await proved(app, client, REAUTH_WINDOW - 10)
    assert (await client.post("/api/passkeys", json={"credential": credential})).status_code == 201
    await proved(app, client, REAUTH_WINDOW + 1)
    response = await client.delete(f"/api/passkeys/{authenticator.id}")
    await error_body(response, 403, "reauthentication_required")
    assert rows(app, "SELECT count(*) FROM passkeys") == [(1,)]
    anonymous = browser(app)
    assert (await anonymous.post("/api/passkeys/register/options")).status_code == 401
    assert (await anonymous.get("/api/passkeys")).status_code == 401


async def test_a_notice_is_mailed_when_a_passkey_is_added(
    app: Quart, ada: QuartClient, user: User, mail_server: MailServer
) -> None:
    await added(ada, Authenticator(), name="Phone")
    [message] = await mail_server.wait_for(1)
    assert message["Subject"] == ADDED
    assert [a.addr_spec for a in message["To"].addresses] == [user.email]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and '"Phone"' in body.get_content()
    assert events(app, user, "passkey added") == 1


async def test_adding_moves_the_epoch_other_sessions_end_this_one_carries_on(
    app: Quart, ada: QuartClient, user: User
) -> None:
    other = await authenticated_client(app, user)
    before = cookie(ada)
    response = await register(ada, Authenticator())
    assert response.status_code == 201
    assert any(c.startswith("session=") for c in response.headers.getlist("Set-Cookie"))
    assert cookie(ada) != before  # a new token for the session that carries on
    assert await is_signed_in(ada)
    assert not await is_signed_in(other)
    [(epoch,)] = rows(app, "SELECT epoch FROM users WHERE id = ?", user.id)
    assert epoch == user.epoch + 1
    # the proof of identity carries on too: another passkey can be added straight away
    assert (await register(ada, Authenticator())).status_code == 201


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"origin": "https://evil.example"}, "origin"),
        ({"origin": "http://auth.example.test:8443"}, "origin"),  # the scheme counts
        ({"origin": "https://auth.example.test"}, "origin"),  # and the port
        ({"rp_id": "evil.example"}, "rp id"),
        ({"rp_id": "example.test"}, "rp id"),
        ({"verified": False}, "user verification"),
    ],
)
async def test_registration_refuses_wrong_origin_rp_or_no_user_verification(
    app: Quart, ada: QuartClient, change: dict[str, Any], message: str
) -> None:
    options = await (await ada.post("/api/passkeys/register/options")).get_json()
    credential = Authenticator().create(options, **change)
    response = await ada.post("/api/passkeys", json={"credential": credential})
    await error_body(response, 400, "invalid_credential")
    assert rows(app, "SELECT count(*) FROM passkeys") == [(0,)], message


async def test_a_registration_challenge_is_single_use_and_per_account(
    app: Quart, ada: QuartClient
) -> None:
    options = await (await ada.post("/api/passkeys/register/options")).get_json()
    authenticator = Authenticator()
    credential = authenticator.create(options)
    assert (await ada.post("/api/passkeys", json={"credential": credential})).status_code == 201
    again = Authenticator().create(options)  # another credential, the same challenge
    response = await ada.post("/api/passkeys", json={"credential": again})
    await error_body(response, 400, "challenge_expired")
    # options made for another account's session do not register a passkey here
    bob = await signed_in(app, await create_user(app, "bob@example.com", "Bob", PASSWORD))
    theirs = await (await bob.post("/api/passkeys/register/options")).get_json()
    response = await ada.post("/api/passkeys", json={"credential": Authenticator().create(theirs)})
    await error_body(response, 400, "challenge_expired")


async def test_a_credential_registered_already_is_refused(app: Quart, ada: QuartClient) -> None:
    authenticator = Authenticator()
    await added(ada, authenticator)
    bob = await signed_in(app, await create_user(app, "bob@example.com", "Bob", PASSWORD))
    response = await register(bob, authenticator)
    await error_body(response, 400, "invalid_credential")
    assert rows(app, "SELECT count(*) FROM passkeys") == [(1,)]
    assert await is_signed_in(bob)  # nothing moved: the attempt was rolled back


@pytest.mark.parametrize(
    ("name", "field_problem"),
    [
        ("x" * 65, True),
        ("bad\x07name", True),
        ("line\nbreak", False),  # whitespace runs become one space
        ("\u202eevil", True),  # a bidi override: it would show the name reversed
        ("\ue000key", True),  # private use: shows as nothing anyone can read
        (" " * 300, True),  # bounded before trimming
        (5, True),
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0645", False),  # Persian needs ZWNJ
        ("\U0001f468\u200d\U0001f4bb laptop", False),  # an emoji joined by ZWJ
    ],
)
async def test_names_are_bounded_and_printable(
    app: Quart, ada: QuartClient, name: Any, field_problem: bool
) -> None:
    options = await (await ada.post("/api/passkeys/register/options")).get_json()
    credential = Authenticator().create(options)
    response = await ada.post("/api/passkeys", json={"credential": credential, "name": name})
    if field_problem:
        body = await error_body(response, 400)
        assert "name" in body.get("fields", {}) or body["error"] == "invalid_input"
    else:
        assert response.status_code == 201
        expected = "line break" if name == "line\nbreak" else name  # as account names keep them
        assert (await response.get_json())["name"] == expected


# --- signing in ----------------------------------------------------------------------------


async def test_sign_in_with_a_passkey(app: Quart, key: Authenticator, user: User) -> None:
    client = browser(app)
    options = await login_options(client)
    assert options["rpId"] == RP_ID and options["allowCredentials"] == []
    assert options["userVerification"] == "required"
    response = await passkey_login(client, key.get(options))
    assert response.status_code == 200
    assert await response.get_json() == {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "email_verified": False,
    }
    assert any(c.startswith("session=") for c in response.headers.getlist("Set-Cookie"))
    assert await is_signed_in(client)
    assert events(app, user, "sign-in") == 1
    # both factors at once: sensitive actions are open without typing the password
    assert (await client.post("/api/passkeys/register/options")).status_code == 200
    [(count, last_used)] = rows(app, "SELECT sign_count, last_used_at FROM passkeys")
    assert count == 1 and abs(last_used - time.time()) < 60
    listed = (await (await client.get("/api/passkeys")).get_json())["passkeys"]
    assert listed[0]["last_used_at"] == pytest.approx(last_used)


async def test_a_passkey_is_both_factors_even_after_a_pending_password_step(
    app: Quart, key: Authenticator, user: User
) -> None:
    await enable_totp(app, user)
    client = browser(app)
    response = await client.post("/api/login", json={"email": user.email, "password": PASSWORD})
    assert (await response.get_json())["second_factor_required"] is True
    assert not await is_signed_in(client)  # pending: waiting for a code
    response = await passkey_login(client, key.get(await login_options(client)))
    assert response.status_code == 200 and (await response.get_json())["id"] == user.id
    assert await is_signed_in(client)
    assert not any(k.startswith("_pending") for k in await session_data(app, client))
    response, fresh = await sign_in_with(app, key)  # and straight from the login page
    assert response.status_code == 200 and await is_signed_in(fresh)


async def test_asking_for_a_challenge_stores_nothing(app: Quart, key: Authenticator) -> None:
    """The login page asks on every view (autofill): a stranger's request costs no row."""
    await settle(app)
    before = row_counts(app)
    client = browser(app)
    options = [await login_options(client) for _ in range(20)]
    assert not client.cookie_jar or not [c for c in client.cookie_jar if c.name == "session"]
    assert row_counts(app) == before
    assert len({o["challenge"] for o in options}) == 20
    assert (await passkey_login(client, key.get(options[3]))).status_code == 200
    after = row_counts(app)
    assert after["sessions"] == before["sessions"] + 1
    assert after["used_challenges"] == before["used_challenges"] + 1


async def test_remember_me_with_a_passkey(app: Quart, key: Authenticator) -> None:
    client = browser(app)
    options = await login_options(client)
    body = {"credential": key.get(options), "remember": True}
    response = await client.post("/api/passkeys/login", json=body)
    assert response.status_code == 200
    assert "Max-Age=" in next(
        c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")
    )


async def test_a_login_challenge_is_single_use(app: Quart, key: Authenticator) -> None:
    client = browser(app)
    options = await login_options(client)
    credential = key.get(options)
    assert (await passkey_login(client, credential)).status_code == 200
    await error_body(await passkey_login(client, credential), 400, "challenge_expired")
    # a fresh signature over the used challenge is refused as well
    await error_body(await passkey_login(client, key.get(options)), 400, "challenge_expired")
    # in any browser: a challenge is not tied to one, but it is answered once
    other = browser(app)
    await error_body(await passkey_login(other, key.get(options)), 400, "challenge_expired")


async def test_a_challenge_expires(app: Quart, key: Authenticator) -> None:
    app.extensions["auth_clock"] = clock = Clock()
    client = browser(app)
    early, late = await login_options(client), await login_options(client)
    clock.advance(CHALLENGE_LIFETIME - 5)
    assert (await passkey_login(client, key.get(early))).status_code == 200
    clock.advance(10)
    await error_body(await passkey_login(browser(app), key.get(late)), 400, "challenge_expired")


async def test_every_tab_may_have_a_challenge(app: Quart, key: Authenticator) -> None:
    client = browser(app)
    tabs = [await login_options(client) for _ in range(5)]
    for options in reversed(tabs):
        assert (await passkey_login(client, key.get(options))).status_code == 200
        await error_body(await passkey_login(client, key.get(options)), 400, "challenge_expired")
        await client.post("/api/logout")


def forged(challenge: str) -> list[str]:
    """The challenge with its MAC, its expiry or its nonce changed, cut short, lengthened."""
    raw = unb64(challenge)
    nonce, expiry, mac = raw[:NONCE], raw[NONCE : NONCE + 8], raw[NONCE + 8 :]
    later = (int.from_bytes(expiry, "big") + 3600).to_bytes(8, "big")
    flipped = bytes([mac[0] ^ 1]) + mac[1:]
    return [
        b64(nonce + expiry + flipped),
        b64(nonce + later + mac),
        b64(secrets.token_bytes(NONCE) + expiry + mac),
        b64(raw[:-1]),
        b64(raw + b"\x00"),
        b64(secrets.token_bytes(len(raw))),
    ]


async def test_forged_challenges_are_refused_and_store_nothing(
    app: Quart, ada: QuartClient, key: Authenticator
) -> None:
    """The authenticator signs whatever it is given: only the app's MAC makes a challenge."""
    await settle(app)
    before = row_counts(app)
    options = await login_options(browser(app))
    for challenge in forged(options["challenge"]):
        credential = key.get({**options, "challenge": challenge})
        await error_body(await passkey_login(browser(app), credential), 400, "challenge_expired")
    registration = await (await ada.post("/api/passkeys/register/options")).get_json()
    for challenge in forged(registration["challenge"]):
        credential = Authenticator().create({**registration, "challenge": challenge})
        response = await ada.post("/api/passkeys", json={"credential": credential})
        await error_body(response, 400, "challenge_expired")
    await settle(app)
    assert row_counts(app)["used_challenges"] == before["used_challenges"]


async def test_a_challenge_works_only_for_its_ceremony(
    app: Quart, ada: QuartClient, key: Authenticator
) -> None:
    registration = await (await ada.post("/api/passkeys/register/options")).get_json()
    login = await login_options(browser(app))
    as_login = key.get({**login, "challenge": registration["challenge"]})
    await error_body(await passkey_login(browser(app), as_login), 400, "challenge_expired")
    as_registration = Authenticator().create({**registration, "challenge": login["challenge"]})
    response = await ada.post("/api/passkeys", json={"credential": as_registration})
    await error_body(response, 400, "challenge_expired")


async def test_one_answer_sent_twice_at_once_signs_in_once(app: Quart, ada: QuartClient) -> None:
    """Without a signature counter only the challenge stops a replay: of two requests with
    one answer at the same moment, one signs in."""
    authenticator = Authenticator()
    await added(ada, authenticator)
    for _ in range(3):
        credential = authenticator.get(await login_options(browser(app)), step=0)
        statuses = await asyncio.gather(
            *(passkey_login(browser(app), credential) for _ in range(2))
        )
        assert sorted(r.status_code for r in statuses) == [200, 400]


async def test_one_registration_sent_twice_at_once_adds_one_passkey(
    app: Quart, ada: QuartClient
) -> None:
    options = await (await ada.post("/api/passkeys/register/options")).get_json()
    credentials = [Authenticator().create(options) for _ in range(2)]
    statuses = await asyncio.gather(
        *(ada.post("/api/passkeys", json={"credential": c}) for c in credentials)
    )
    assert sorted(r.status_code for r in statuses) == [201, 400]
    assert len((await (await ada.get("/api/passkeys")).get_json())["passkeys"]) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"origin": "https://evil.example"},
        {"origin": "https://auth.example.test"},
        {"rp_id": "evil.example"},
        {"verified": False},
    ],
    ids=["origin", "port", "rp-id", "no-uv"],
)
async def test_sign_in_refuses_wrong_origin_rp_or_no_user_verification(
    app: Quart, key: Authenticator, user: User, change: dict[str, Any]
) -> None:
    response, client = await sign_in_with(app, key, **change)
    await error_body(response, 400, "invalid_credential")
    assert not await is_signed_in(client)
    assert events(app, user, "passkey sign-in failed") == 1


async def test_a_counter_that_does_not_increase_is_refused_as_cloned(
    app: Quart, key: Authenticator, user: User
) -> None:
    assert (await sign_in_with(app, key, step=5))[0].status_code == 200
    for step in (0, -2):  # the same count again, then a lower one
        response, client = await sign_in_with(app, key, step=step)
        await error_body(response, 400, "cloned_authenticator")
        assert not await is_signed_in(client)
    assert events(app, user, "passkey sign-in failed") == 2
    assert rows(app, "SELECT sign_count FROM passkeys") == [(5,)]
    assert (await sign_in_with(app, key, step=3))[0].status_code == 200


async def test_an_authenticator_without_a_counter_signs_in_again_and_again(
    app: Quart, ada: QuartClient
) -> None:
    authenticator = Authenticator()
    await added(ada, authenticator)
    for _ in range(3):
        assert (await sign_in_with(app, authenticator, step=0))[0].status_code == 200
    # once it has counted, it must keep counting
    assert (await sign_in_with(app, authenticator, step=1))[0].status_code == 200
    assert (await sign_in_with(app, authenticator, step=0))[0].status_code == 400


async def test_a_wrong_signature_or_user_handle_is_refused(app: Quart, key: Authenticator) -> None:
    client = browser(app)
    credential = key.get(await login_options(client))
    signature = bytearray(unb64(credential["response"]["signature"]))
    signature[-1] ^= 1
    credential["response"]["signature"] = b64(bytes(signature))
    await error_body(await passkey_login(client, credential), 400, "invalid_credential")
    credential = key.get(await login_options(client))
    credential["response"]["userHandle"] = b64(b"someone else")
    await error_body(await passkey_login(client, credential), 400, "invalid_credential")
    assert not await is_signed_in(client)


async def test_failed_passkey_sign_ins_are_throttled_per_account(
    app: Quart, key: Authenticator
) -> None:
    for _ in range(ACCOUNT_FAILURES):
        response, _ = await sign_in_with(app, key, verified=False)
        assert response.status_code == 400
    response, _ = await sign_in_with(app, key)  # even the right passkey waits now
    await error_body(response, 429, "too_many_attempts")
    assert int(response.headers["Retry-After"]) > 0


async def test_unknown_passkeys_count_against_the_network(app: Quart, key: Authenticator) -> None:
    for _ in range(ADDRESS_FAILURES):
        response, _ = await sign_in_with(app, Authenticator())
        await error_body(response, 400, "invalid_credential")
    response, _ = await sign_in_with(app, Authenticator())
    await error_body(response, 429, "too_many_attempts")


# --- removing, renaming, export ------------------------------------------------------------


async def test_remove_then_sign_in_is_refused(app: Quart, ada: QuartClient, user: User) -> None:
    authenticator = Authenticator()
    await added(ada, authenticator)
    other = await authenticated_client(app, user)
    response = await ada.delete(f"/api/passkeys/{authenticator.id}")
    assert response.status_code == 204
    assert any(c.startswith("session=") for c in response.headers.getlist("Set-Cookie"))
    assert await is_signed_in(ada) and not await is_signed_in(other)
    assert events(app, user, "passkey removed") == 1
    assert (await (await ada.get("/api/passkeys")).get_json()) == {"passkeys": []}
    response, _ = await sign_in_with(app, authenticator)
    await error_body(response, 400, "invalid_credential")
    await error_body(await ada.delete(f"/api/passkeys/{authenticator.id}"), 404, "not_found")


async def test_another_accounts_passkey_is_not_found(app: Quart, key: Authenticator) -> None:
    bob = await signed_in(app, await create_user(app, "bob@example.com", "Bob", PASSWORD))
    await error_body(await bob.delete(f"/api/passkeys/{key.id}"), 404, "not_found")
    response = await bob.post(f"/account/passkeys/{key.id}/rename", form={"name": "Mine"})
    assert response.status_code == 303
    assert rows(app, "SELECT name FROM passkeys") == [("Passkey 1",)]
    assert "There is no such passkey." in await (await bob.get("/account")).get_data(as_text=True)
    response = await bob.delete("/api/passkeys/login")  # a sibling route, not a passkey id
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["Allow"].split(",")} == {"OPTIONS", "POST"}


async def test_rename_on_the_account_page(app: Quart, ada: QuartClient, key: Authenticator) -> None:
    page = await (await ada.get("/account")).get_data(as_text=True)
    assert 'id="passkeys"' in page and "Passkey 1" in page
    assert f'action="/account/passkeys/{key.id}/rename"' in page
    assert f'action="/account/passkeys/{key.id}/remove"' in page
    assert "passkeys.js" in page and "data-passkey-add hidden" in page
    response = await ada.post(f"/account/passkeys/{key.id}/rename", form={"name": " Laptop "})
    assert response.status_code == 303 and response.headers["Location"].endswith(
        "/account#passkeys"
    )
    page = await (await ada.get("/account")).get_data(as_text=True)
    assert "Laptop" in page and "now called" in page
    for bad in ("", "x" * 65, "a\x00b"):
        await ada.post(f"/account/passkeys/{key.id}/rename", form={"name": bad})
        page = await (await ada.get("/account")).get_data(as_text=True)
        assert "flash-danger" in page
    assert rows(app, "SELECT name FROM passkeys") == [("Laptop",)]


async def test_a_huge_name_is_refused_before_it_is_normalised(
    app: Quart, ada: QuartClient, key: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request's cost: NFC of combining marks is the costly step, and a name far over
    the limit never reaches it (at most 4 x 64 characters are normalised)."""
    normalised: list[int] = []
    normalize = unicodedata.normalize

    def counting(form: Any, value: str) -> str:
        normalised.append(len(value))
        return normalize(form, value)

    monkeypatch.setattr(unicodedata, "normalize", counting)
    marks = "\u0301\u0316" * 2_000  # 24 KB of form body, under MAX_CONTENT_LENGTH
    response = await ada.post(f"/account/passkeys/{key.id}/rename", form={"name": marks})
    assert response.status_code == 303
    response = await register(ada, Authenticator(), name=marks)
    await error_body(response, 400, "invalid_input")
    assert all(n <= 4 * 64 for n in normalised)
    assert rows(app, "SELECT name FROM passkeys") == [("Passkey 1",)]


async def test_two_renames_at_once_leave_one_of_the_names(
    app: Quart, ada: QuartClient, key: Authenticator
) -> None:
    path = f"/account/passkeys/{key.id}/rename"
    for round_ in range(5):
        names = [f"Laptop {round_}", f"Phone {round_}"]
        responses = await asyncio.gather(*(ada.post(path, form={"name": n}) for n in names))
        assert [r.status_code for r in responses] == [303, 303]
        [(stored,)] = rows(app, "SELECT name FROM passkeys")
        assert stored in names


async def test_a_rename_racing_the_removal_does_not_bring_the_passkey_back(
    app: Quart, ada: QuartClient, key: Authenticator, user: User
) -> None:
    """Whichever lands first, the passkey is gone afterwards: a rename after the removal
    changes no row (the page says there is no such passkey), one before it is removed."""
    rename = ada.post(f"/account/passkeys/{key.id}/rename", form={"name": "Late"})
    remove = ada.delete(f"/api/passkeys/{key.id}")
    renamed, removed = await asyncio.gather(rename, remove)
    assert removed.status_code == 204
    assert renamed.status_code in (302, 303)  # 302: its session ended with the removal
    assert rows(app, "SELECT count(*) FROM passkeys") == [(0,)]
    assert events(app, user, "passkey removed") == 1
    response, _ = await sign_in_with(app, key)
    await error_body(response, 400, "invalid_credential")


async def test_remove_on_the_account_page_asks_for_the_password_then_comes_back(
    app: Quart, ada: QuartClient, key: Authenticator, user: User
) -> None:
    await proved(app, ada, REAUTH_WINDOW + 1)
    path = f"/account/passkeys/{key.id}/remove"
    response = await ada.post(path)
    assert response.status_code in (302, 303)
    assert response.headers["Location"] == f"/reauthenticate?next={path}"
    assert rows(app, "SELECT count(*) FROM passkeys") == [(1,)]
    response = await ada.post("/reauthenticate", form={"password": PASSWORD, "next": path})
    assert response.status_code == 303 and response.headers["Location"] == path
    response = await ada.get(path)  # where the browser goes next: back to the account page
    assert response.status_code == 303 and response.headers["Location"].endswith(
        "/account#passkeys"
    )
    response = await ada.post(path)
    assert response.status_code == 303
    assert rows(app, "SELECT count(*) FROM passkeys") == [(0,)]
    page = await (await ada.get("/account")).get_data(as_text=True)
    assert "The passkey was removed." in page and "You have no passkeys yet." in page


async def test_export_lists_passkeys_without_key_material(
    app: Quart, ada: QuartClient, key: Authenticator
) -> None:
    export = await (await ada.get("/api/me/export")).get_json()
    [passkey] = export["passkeys"]
    assert passkey == {
        "id": key.id,
        "name": "Passkey 1",
        "created_at": pytest.approx(time.time(), abs=60),
        "last_used_at": None,
    }
    text = json.dumps(export)
    [(public_key,)] = rows(app, "SELECT public_key FROM passkeys")
    assert b64(bytes(public_key)) not in text and "sign_count" not in text


# --- pages ---------------------------------------------------------------------------------


async def test_the_login_page_offers_passkeys_only_with_javascript(client: QuartClient) -> None:
    page = await (await client.get("/login")).get_data(as_text=True)
    assert 'autocomplete="username webauthn"' in page
    assert "data-passkey-signin hidden" in page and "Sign in with a passkey" in page
    assert '<script src="/static/passkeys.js" defer></script>' in page
    script = await client.get("/static/passkeys.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    source = await script.get_data(as_text=True)
    assert "parseRequestOptionsFromJSON" in source and "parseCreationOptionsFromJSON" in source
    assert "toJSON()" in source


# --- malformed input ------------------------------------------------------------------------


def _mangle(credential: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(credential))
    target = changed
    for part in path[:-1]:
        target = target[part]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


MALFORMED = [
    (("id",), "has spaces"),
    (("id",), "x" * 2000),
    (("id",), KeyError),
    (("rawId",), "%%%"),
    (("type",), "password"),
    (("response",), "nope"),
    (("response", "clientDataJSON"), "!!"),
    (("response", "clientDataJSON"), b64(b"not json")),
    (("response", "clientDataJSON"), b64(b"[1, 2]")),
    (("response", "clientDataJSON"), KeyError),
    (("response", "attestationObject"), b64(b"\xff\xff")),
    (("response", "attestationObject"), b64(cbor2.dumps({"fmt": "none"}))),
    (
        ("response", "attestationObject"),
        b64(cbor2.dumps({"fmt": "packed", "attStmt": {}, "authData": b"x"})),
    ),
    (("response", "attestationObject"), b64(cbor2.dumps([1] * 3))),
    (("response", "authenticatorData"), b64(b"short")),
    (("response", "signature"), b64(b"")),
    (("response", "userHandle"), 17),
    (("response", "userHandle"), "%%"),
]


@pytest.mark.parametrize(("path", "value"), MALFORMED)
async def test_malformed_credentials_are_400s(
    app: Quart, ada: QuartClient, key: Authenticator, path: tuple[str, ...], value: Any
) -> None:
    options = await (await ada.post("/api/passkeys/register/options")).get_json()
    if path[-1] in ("authenticatorData", "signature", "userHandle"):
        client = browser(app)
        credential = key.get(await login_options(client))
        response = await passkey_login(client, _mangle(credential, path, value))
    else:
        credential = Authenticator().create(options)
        response = await ada.post(
            "/api/passkeys", json={"credential": _mangle(credential, path, value)}
        )
    body = await error_body(response, 400)
    assert body["error"] in ("invalid_credential", "challenge_expired", "invalid_input")


@pytest.mark.parametrize(
    "body", [{}, {"credential": None}, {"credential": []}, {"credential": "x"}, []]
)
async def test_a_missing_or_non_object_credential_is_a_400(ada: QuartClient, body: Any) -> None:
    for path in ("/api/passkeys", "/api/passkeys/login"):
        await error_body(await ada.post(path, json=body), 400)


FUZZ = settings(
    max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@FUZZ
@given(
    part=st.sampled_from(["clientDataJSON", "attestationObject"]),
    position=st.integers(min_value=0, max_value=400),
    byte=st.integers(min_value=0, max_value=255),
)
async def test_flipped_bytes_in_a_registration_are_never_a_5xx(
    app: Quart, ada: QuartClient, part: str, position: int, byte: int
) -> None:
    options = await (await ada.post("/api/passkeys/register/options")).get_json()
    credential = Authenticator().create(options)
    data = bytearray(unb64(credential["response"][part]))
    data[position % len(data)] = byte
    credential["response"][part] = b64(bytes(data))
    response = await ada.post("/api/passkeys", json={"credential": credential})
    assert response.status_code in (201, 400), await response.get_data(as_text=True)


@FUZZ
@given(
    part=st.sampled_from(["clientDataJSON", "authenticatorData", "signature"]),
    position=st.integers(min_value=0, max_value=200),
    byte=st.integers(min_value=0, max_value=255),
)
async def test_flipped_bytes_in_a_sign_in_are_never_a_5xx(
    app: Quart, key: Authenticator, part: str, position: int, byte: int
) -> None:
    client = browser(app)
    credential = key.get(await login_options(client))
    data = bytearray(unb64(credential["response"][part]))
    data[position % len(data)] = byte
    credential["response"][part] = b64(bytes(data))
    response = await passkey_login(client, credential)
    assert response.status_code in (200, 400, 429), await response.get_data(as_text=True)


async def test_an_attestation_with_text_that_is_not_utf8_is_a_400(ada: QuartClient) -> None:
    """Found by the flipped-bytes search: cbor2 refuses such text with an error that is not
    a ValueError, which once escaped as a 500."""
    options = await (await ada.post("/api/passkeys/register/options")).get_json()
    credential = Authenticator().create(options)
    data = bytearray(unb64(credential["response"]["attestationObject"]))
    data[2] = 128  # inside the "fmt" key's text: no longer UTF-8
    credential["response"]["attestationObject"] = b64(bytes(data))
    response = await ada.post("/api/passkeys", json={"credential": credential})
    await error_body(response, 400, "invalid_credential")
