"""The account page: sessions, password change and the security log (SPEC §3)."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, flash, redirect, request
from quart.typing import ResponseReturnValue
from quart_schema import hide

from ..account import list_sessions, recent_events, revoke_other_sessions, revoke_session
from ..auth import (
    change_password,
    login_required,
    server_session,
    signed_in_user,
)
from ..errors import AppError, render_page
from ..factors import status

bp = Blueprint("account", __name__)

MAX_PAGE = 10_000


def _page_number() -> int:
    """The `page` query parameter (1-based); anything else is the first page."""
    raw = request.args.get("page", "1")
    return max(1, min(MAX_PAGE, int(raw))) if raw.isdigit() and len(raw) < 6 else 1


async def _page(error: AppError | None = None) -> Response:
    user = signed_in_user()
    size = int(current_app.config["PAGE_SIZE"])
    page = _page_number()
    sessions, more = await list_sessions(user, (page - 1) * size, size)
    events = await recent_events(user)
    totp_on, codes_left = await status(user)
    return await render_page(
        "account.html",
        error,
        user=user,
        sessions=sessions,
        page=page,
        more_sessions=more,
        current_hash=server_session().token_hash,
        events=events,
        totp_on=totp_on,
        codes_left=codes_left,
    )


@bp.get("/account")
@hide
@login_required
async def account() -> Response:
    return await _page()


@bp.post("/account/sessions/<session_id>/revoke")
@hide
@login_required
async def revoke(session_id: str) -> ResponseReturnValue:
    try:
        await revoke_session(signed_in_user(), session_id)
    except AppError as error:
        return await _page(error)
    await flash("The session has been signed out.", "success")
    return redirect("/account", 303)


@bp.post("/account/sessions/revoke-others")
@hide
@login_required
async def revoke_others() -> ResponseReturnValue:
    count = await revoke_other_sessions(signed_in_user())
    await flash(f"Signed out {count} other session(s).", "success")
    return redirect("/account", 303)


@bp.post("/account/password")
@hide
@login_required
async def password() -> ResponseReturnValue:
    form = await request.form
    try:
        await change_password(signed_in_user(), form)
    except AppError as error:
        return await _page(error)
    await flash("Your password has been changed. Other sessions were signed out.", "success")
    return redirect("/account", 303)
