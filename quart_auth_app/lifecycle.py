"""The account's own life: re-authentication, deletion and export (SPEC §11, §12)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

from quart import current_app, redirect, request, url_for

from .account import list_sessions
from .auth import (
    confirm_password,
    finish,
    mailer,
    server_session,
    store,
    throttle,
)
from .errors import AppError, invalid_input, is_api_request
from .passkeys import export_passkeys
from .store import Outgoing, User
from .validation import text

P = ParamSpec("P")
R = TypeVar("R")

EXPORT_SESSIONS = 1000  # sessions listed in an export (MAX_SESSIONS_PER_USER is 100)


def recently_proved() -> bool:
    """Whether this session's owner typed their password within REAUTH_WINDOW."""
    return server_session().proved_within(float(current_app.config["REAUTH_WINDOW"]))


def reauth_required(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[Any]]:
    """Sensitive views (inside `login_required`): open within REAUTH_WINDOW of the password
    being typed; otherwise pages ask for it and come back here, the API answers 403."""
    return _proof_first(view, None)


def reauth_first(
    back: str,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[Any]]]:
    """`reauth_required` for a form's POST: a page asks for the password, then goes `back`
    (the form's page: a POST's own address cannot be come back to)."""
    return lambda view: _proof_first(view, back)


def _proof_first(view: Callable[P, Awaitable[R]], back: str | None) -> Callable[P, Awaitable[Any]]:
    @wraps(view)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        if not recently_proved():
            if is_api_request():
                raise reauthentication_required()
            target = back or request.full_path.rstrip("?")
            return redirect(f"{url_for('life.reauthenticate')}?next={quote(target, safe='/')}", 303)
        return await view(*args, **kwargs)

    return wrapper


def reauthentication_required() -> AppError:
    return AppError(
        403,
        "reauthentication_required",
        "Please confirm your password first (POST /api/reauthenticate).",
    )


async def prove_identity(
    user: User,
    data: Mapping[str, Any],
    event_kind: str,
    field: str,
    other_problems: Mapping[str, str] | None = None,
) -> None:
    """Before a sensitive action: the password in `field` of `data`, or, left out, a proof
    still within REAUTH_WINDOW (403 `reauthentication_required` without either)."""
    if text(data, field):
        await confirm_password(user, data, event_kind, other_problems, field)
        return
    if not recently_proved():
        raise reauthentication_required()
    if other_problems:
        raise invalid_input(dict(other_problems))


async def reauthenticate(user: User, data: Mapping[str, Any]) -> None:
    """The password typed again (field `password`): sensitive actions open for a while."""
    await confirm_password(user, data, "re-authentication failed", field="password")


async def delete_account(user: User, data: Mapping[str, Any]) -> None:
    """Delete the account (the password typed again): the user, sessions, tokens, events
    and throttle counters go in one transaction; a goodbye mail is queued with them."""
    await prove_identity(user, data, "account deletion failed", "password")
    goodbye = Outgoing("account_deleted", user.email, {"name": user.name})
    keys = throttle().keys_of(user)
    await finish(store().delete_user(user.id, keys, goodbye, time.time()))
    mailer().wake()
    server_session().end()


async def export(user: User) -> dict[str, Any]:
    """Everything the account holds about its owner, without secrets."""
    sessions, _ = await list_sessions(user, 0, EXPORT_SESSIONS)
    events = await store().select_events_of_user(
        user.id, int(current_app.config["EVENTS_PER_USER"])
    )
    return {
        "profile": {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "email_verified": user.email_verified,
            "created_at": user.created_at,
        },
        "sessions": [
            {
                "id": r.id,
                "device": r.device,
                "user_agent": r.user_agent,
                "ip": r.ip,
                "created_at": r.created_at,
                "last_seen": r.last_seen,
                "expires_at": r.expires_at,
                "remember": r.remember,
            }
            for r in sessions
        ],
        "events": [
            {
                "kind": e.kind,
                "ip": e.ip,
                "device": e.device,
                "user_agent": e.user_agent,
                "created_at": e.created_at,
            }
            for e in events
        ],
        "passkeys": await export_passkeys(user),
    }
