"""What the account page shows and does besides passwords: the sessions, their revocation,
the security log, and the store's health (SPEC §3, §5)."""

from __future__ import annotations

from quart import current_app

from .auth import finish, record_event, server_session, store, throttle
from .clock import now
from .errors import AppError
from .sessions import expiry
from .store import Event, SessionRecord, StoreUnavailable, User


def _session_id() -> str:
    record = server_session().record
    return record.id if record is not None else ""


async def recent_events(user: User) -> list[Event]:
    """The user's latest security events (EVENTS_SHOWN of them), newest first."""
    return await store().select_events_of_user(user.id, int(current_app.config["EVENTS_SHOWN"]))


async def database_health() -> tuple[str, bool]:
    """The store's engine, and whether it answers right now."""
    try:
        await store().ping()
    except StoreUnavailable:
        return store().engine, False
    return store().engine, True


async def list_sessions(
    user: User, offset: int = 0, limit: int = 50
) -> tuple[list[SessionRecord], bool]:
    """A page of the user's live sessions, most recently used first, and whether more follow."""
    cutoffs = expiry(current_app.config, now())
    records = await store().select_sessions_of_user(user.id, cutoffs, limit + 1, offset)
    return records[:limit], len(records) > limit


async def revoke_session(user: User, session_id: str) -> None:
    """End one of the user's own sessions; 404 for any id that is not theirs."""
    mine = _session_id()
    await throttle().check_session_write(mine)
    if not await finish(store().delete_session_of_user(user.id, session_id)):
        raise AppError(404, "not_found", "There is no such session.")
    await throttle().count_session_write(mine)
    await record_event(user, "session revoked")


async def revoke_other_sessions(user: User) -> int:
    """End every session of the user but this one; return how many ended."""
    mine = _session_id()
    await throttle().check_session_write(mine)
    except_hash = server_session().token_hash
    count = await finish(store().delete_sessions_of_user(user.id, except_hash=except_hash))
    if count:  # revoking nothing writes nothing (SPEC §7)
        await throttle().count_session_write(mine)
        await record_event(user, "other sessions revoked")
    return count
