"""Sign-up, sign-in, sign-out and password change: the domain both HTML and API call.

Vocabulary from Django's contrib.auth: `authenticate` checks credentials,
`login_user` starts a session under a new token, `logout_user` ends it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial, wraps
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import quote

from quart import after_this_request, current_app, redirect, request, url_for
from quart.globals import request_ctx

from .agents import describe
from .devices import set_device_cookie
from .errors import AppError, from_status, invalid_input, is_api_request
from .mail.sender import Sender
from .metrics import sign_in, sign_up
from .passwords import Hasher, check_strength
from .services import services
from .sessions import ServerSession, client_meta
from .store import Outgoing, Store, User
from .throttle import Throttle
from .validation import (
    ValidationFailed,
    check_signup_fields,
    new_password_length_problem,
    sign_in_email,
    text,
    typed_password_problem,
)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

INVALID_CREDENTIALS = "Invalid credentials. Please try again."
UNVERIFIED_OK = "unverified_ok"


def store() -> Store:
    """The current app's store."""
    return services().store


def hasher() -> Hasher:
    """The current app's bcrypt pool."""
    return services().hasher


def throttle() -> Throttle:
    """The current app's sign-in throttle."""
    return services().throttle


def mailer() -> Sender:
    """The current app's outbox sender (wake it after queueing mail)."""
    return services().mailer


def server_session() -> ServerSession:
    """The request's session, typed."""
    return cast(ServerSession, request_ctx.session)  # the object, not the `session` proxy


def current_user() -> User | None:
    """The signed-in user, or None."""
    return server_session().user


def signed_in_user() -> User:
    """The signed-in user, for views behind `login_required` (401 if there is none)."""
    user = current_user()
    if user is None:
        raise from_status(401)
    return user


async def finish(work: Awaitable[T]) -> T:
    """Run a security write to its end even if the client hangs up meanwhile (Quart then
    cancels the view): a logout, a revocation or a credential change, once begun, is never
    left undone (SPEC §7, all or nothing)."""
    return await asyncio.shield(work)


async def record_event(user: User, kind: str) -> None:
    """Log a security event for the user with this request's address and agent."""
    agent, ip = client_meta()
    await store().insert_event(user.id, kind, ip, agent, time.time(), describe(agent))


@dataclass(frozen=True)
class SignUp:
    """What a sign-up did: made the account (`created`), or found the email already this
    password's own and signed its owner in as `/login` would (`complete` False: a second
    factor is still asked, the session is pending)."""

    user: User
    created: bool
    complete: bool = True


async def register(data: Mapping[str, Any]) -> SignUp:
    """Create an account from form or JSON fields and sign it in.

    Cheap, bounded checks first; the attempt is counted by the throttle before the
    password's strength is judged (zxcvbn is the costly step, SPEC §7).

    Retry-safe: a sign-up whose account was committed but whose answer was lost (a node
    or a connection died) is sent again; the email is then taken, by this very password.
    So a taken email's password is checked exactly as `/login` checks it (`authenticate`:
    the same throttle keys and counting, the same bcrypt run), and if it is right the
    owner is signed in as by `/login` (`sign_in`: a second factor still asked). A wrong
    one is the 409 it always was, counted as a failed sign-in.
    """
    try:
        reg = check_signup_fields(data, current_app.config)
    except ValidationFailed as exc:
        raise invalid_input(exc.fields) from None
    await throttle().check_signup()
    problem = await password_weakness(reg.password, [reg.email, reg.name])
    if problem:
        raise invalid_input({"password": problem})
    if await store().select_user_by_email(reg.email) is not None:
        return await _sign_in_instead(reg.email, reg.password)
    password_hash = await hasher().hash(reg.password)
    verify = Outgoing("verify_email", reg.email)
    user = await store().insert_user(reg.email, reg.name, password_hash, time.time(), verify)
    if user is None:  # another request won the race for this email (maybe this one's twin)
        return await _sign_in_instead(reg.email, reg.password)
    sign_up()
    mailer().wake()
    await login_user(user)
    return SignUp(user, created=True)


async def _sign_in_instead(email: str, password: str) -> SignUp:
    """The email is taken: its owner's password signs in (a retried sign-up), any other
    is 409 "email taken", counted as a failed sign-in; 429 when throttled."""
    from .factors import sign_in  # factors builds on this module

    try:
        user = await authenticate(email, password)
    except AppError as error:
        if error.code == "invalid_credentials":
            raise _taken() from None
        raise
    complete = await sign_in(user, remember=False)
    return SignUp(user, created=False, complete=complete)


async def password_weakness(password: str, user_inputs: list[str]) -> str | None:
    """Why `password` is too easy to guess, or None (zxcvbn: bounded, one at a time)."""
    return await check_strength(
        password, user_inputs, int(current_app.config["PASSWORD_MIN_SCORE"])
    )


def _taken() -> AppError:
    return AppError(
        409,
        "email_taken",
        "An account with this email already exists. Sign in instead?",
        {"email": "This email is already registered."},
    )


def read_credentials(data: Mapping[str, Any]) -> tuple[str, str]:
    """Email (or the original example's `username`) and password, checked for shape only."""
    fields: dict[str, str] = {}
    email = ""
    try:
        email = sign_in_email(text(data, "email") or text(data, "username"))
    except ValidationFailed as exc:
        fields.update(exc.fields)
    password = text(data, "password")
    problem = typed_password_problem(password, current_app.config, "Please enter your password.")
    if problem:
        fields["password"] = problem
    if fields:
        raise invalid_input(fields)
    return email, password


async def authenticate(email: str, password: str) -> User:
    """The user these credentials belong to, or 401.

    Known and unknown emails run the same steps at the same cost (SPEC §7): one read,
    one throttle transaction (which also records the failure event for a known account),
    one bcrypt run. The user's credential epoch is read here, before bcrypt: a session
    started from it is dead if the password changes meanwhile (SPEC §5).
    """
    user = await store().select_user_by_email(email)
    attempt = await throttle().check_signin(email, user, "sign-in failed")
    ok = await hasher().check(password, user.password_hash if user else None)
    if user is None or not ok:
        sign_in("failed")
        raise AppError(401, "invalid_credentials", INVALID_CREDENTIALS)
    await throttle().succeeded(attempt)
    if hasher().needs_rehash(user.password_hash):
        new_hash = await hasher().hash(password)
        await store().rehash_user_password(user.id, user.password_hash, new_hash)
    return user


async def login_user(user: User, remember: bool = False) -> None:
    """Sign the user in: the session moves to a new token when the response is saved, and
    the browser, which has just proved the password (signing in or signing up), gets a
    device cookie for the account (lockouts the owner survives, SPEC §7)."""
    server_session().rotate(user, remember)
    after_this_request(partial(set_device_cookie, user=user))
    await record_event(user, "sign-in")


async def logout_user() -> None:
    """Delete the session row now; the cookie ends with the response."""
    current = server_session()
    if current.token_hash is not None:
        await finish(store().delete_session_by_hash(current.token_hash))
    if current.user is not None:
        await record_event(current.user, "sign-out")
    current.end()


async def change_password(user: User, data: Mapping[str, Any]) -> None:
    """Check the current password, store the new one, end every other session, rotate this one.

    The new hash, the new credential epoch and the end of the other sessions are one
    transaction: no failure leaves the new password stored with old sessions alive.
    """
    new_password = text(data, "new_password")
    problem = new_password_length_problem(new_password, current_app.config)
    await confirm_password(
        user, data, "password change failed", {"new_password": problem} if problem else {}
    )
    problem = await password_weakness(new_password, [user.email, user.name])
    if problem:
        raise invalid_input({"new_password": problem})
    current = server_session()
    new_hash = await hasher().hash(new_password)
    notice = Outgoing("password_changed", user.email, {"how": "changed", "name": user.name})
    changed = await finish(
        store().change_user_password(user.id, new_hash, current.token_hash, notice, time.time())
    )
    if changed is None:  # the account was deleted meanwhile
        raise from_status(401)
    mailer().wake()
    current.rotate(changed)
    await record_event(changed, "password changed")


async def confirm_password(
    user: User,
    data: Mapping[str, Any],
    event_kind: str,
    other_problems: Mapping[str, str] | None = None,
    field: str = "current_password",
) -> None:
    """The signed-in user typed their password again (`field` of `data`): counted like a
    sign-in, 403 if wrong; right, it renews the session's proof of identity (SPEC §12).

    `other_problems` are the request's other shape errors, reported with this field's in
    one 400 before anything is counted.
    """
    password = text(data, field)
    fields = dict(other_problems or {})
    problem = typed_password_problem(
        password, current_app.config, "Please enter your current password."
    )
    if problem:  # as at sign-in: a 400, not a counted guess
        fields[field] = problem
    if fields:
        raise invalid_input(fields)
    attempt = await throttle().check_signin(user.email, user, event_kind)
    if not await hasher().check(password, user.password_hash):
        wrong = "The current password is not right."
        raise AppError(403, "wrong_password", wrong, {field: wrong})
    await throttle().succeeded(attempt)
    server_session().confirm_identity()


def login_required(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[Any]]:
    """Pages redirect anonymous visitors to the login form; the API answers 401."""

    @wraps(view)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        user = current_user()
        if user is None:
            if is_api_request():
                raise from_status(401)
            target = request.full_path.rstrip("?")
            return redirect(f"{url_for('pages.login')}?next={quote(target, safe='/')}")
        if (
            not user.email_verified
            and current_app.config["REQUIRE_VERIFIED_EMAIL"]
            and not getattr(view, UNVERIFIED_OK, False)
        ):
            if is_api_request():
                raise AppError(403, "email_unverified", "Please verify your email address first.")
            return redirect(url_for("recovery.unverified"))
        return await view(*args, **kwargs)

    return wrapper


def unverified_ok(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Mark a view (under `login_required`) as open to accounts whose address is not verified
    yet, when REQUIRE_VERIFIED_EMAIL closes the others to them (SPEC §11)."""
    setattr(view, UNVERIFIED_OK, True)
    return view
