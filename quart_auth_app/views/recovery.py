"""Pages of the way back and of the address: forgot, reset, verify, email change (SPEC §11).

A link's GET never uses its token up (mail scanners follow links): the reset link moves
the token into the session and redirects, so it leaves the address bar and every Referer;
the verify and email-change links show a button that POSTs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from quart import Blueprint, Response, flash, redirect, request, session, url_for
from quart.typing import ResponseReturnValue
from quart_schema import hide
from werkzeug.sansio.response import Response as BaseResponse

from ..auth import current_user, login_required, signed_in_user, unverified_ok
from ..errors import AppError, render_page
from ..recovery import (
    change_email,
    forgot_password,
    resend_verification,
    reset_password,
    reset_token,
    verify_email,
)
from ..store import User
from ..validation import text

bp = Blueprint("recovery", __name__)
R = TypeVar("R", bound=BaseResponse)

RESET_TOKEN = "_reset_token"  # noqa: S105 (the session key a reset link's token waits under)


def _no_referrer(response: R) -> R:
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def _invalid(error: AppError) -> Response:
    """The 400 page for a dead link, with the way to ask for a new one."""
    return await render_page("link_invalid.html", error)


@bp.get("/password/forgot")
@hide
async def forgot() -> Response:
    return await render_page("forgot.html", email="", sent=None)


@bp.post("/password/forgot")
@hide
async def forgot_post() -> Response:
    form = await request.form
    try:
        sent = await forgot_password(form)
    except AppError as error:
        return await render_page("forgot.html", error, email=text(form, "email")[:254], sent=None)
    return await render_page("forgot.html", email="", sent=sent)


@bp.get("/password/reset/<token>")
@hide
async def reset_link(token: str) -> ResponseReturnValue:
    """Move a live token from the address into the session (the page then has no token in
    its URL to leak); a dead one is answered here and stores nothing (SPEC §7)."""
    try:
        await reset_token(token[:128])
    except AppError as error:
        return _no_referrer(await _invalid(error))
    session[RESET_TOKEN] = token[:128]
    return _no_referrer(redirect(url_for("recovery.reset"), 303))


@bp.get("/password/reset")
@hide
async def reset() -> Response:
    try:
        found = await reset_token(text(session, RESET_TOKEN))
    except AppError as error:
        return await _invalid(error)
    return await render_page("reset.html", email=found.user.email)


@bp.post("/password/reset")
@hide
async def reset_post() -> ResponseReturnValue:
    form = await request.form
    token = text(session, RESET_TOKEN)
    try:
        await reset_password(token, form)
    except AppError as error:
        if error.code == "invalid_token":
            return await _invalid(error)
        found = await reset_token(token)
        return await render_page("reset.html", error, email=found.user.email)
    session.pop(RESET_TOKEN, None)
    await flash("Your password has been reset. Please sign in.", "success")
    return redirect(url_for("pages.login"), 303)


async def _confirm_page(token: str, purpose: str) -> Response:
    """A mailed link's GET: a button that POSTs the token (scanners follow links)."""
    return _no_referrer(await render_page("confirm_link.html", token=token[:128], purpose=purpose))


async def _confirmed(use: Callable[[str], Awaitable[User]], done: str) -> ResponseReturnValue:
    """A link's POST: use the token, say `done` (with the account's email), go on."""
    form = await request.form
    try:
        user = await use(text(form, "token"))
    except AppError as error:
        if error.code == "invalid_token":
            return await _invalid(error)
        return await render_page("error.html", error)
    await flash(done.format(email=user.email), "success")
    return redirect(url_for("account.account" if current_user() else "pages.login"), 303)


@bp.get("/email/verify/<token>")
@hide
async def verify_link(token: str) -> Response:
    return await _confirm_page(token, "verify")


@bp.post("/email/verify")
@hide
async def verify_post() -> ResponseReturnValue:
    return await _confirmed(verify_email, "Thank you: {email} is verified.")


@bp.get("/email/change/<token>")
@hide
async def change_link(token: str) -> Response:
    return await _confirm_page(token, "change")


@bp.post("/email/change")
@hide
async def change_post() -> ResponseReturnValue:
    return await _confirmed(change_email, "Your email address is now {email}.")


@bp.get("/email/unverified")
@hide
@login_required
@unverified_ok
async def unverified() -> ResponseReturnValue:
    user = signed_in_user()
    if user.email_verified:
        return redirect(url_for("pages.index"), 303)
    return await render_page("check_email.html", user=user)


@bp.post("/account/email/resend")
@hide
@login_required
@unverified_ok
async def resend() -> ResponseReturnValue:
    user = signed_in_user()
    try:
        await resend_verification(user)
    except AppError as error:
        return await render_page("check_email.html", error, user=user)
    await flash(f"A new link is on its way to {user.email}.", "info")
    # /account, or for an unverified account where that is closed, the check-email page
    return redirect(url_for("account.account"), 303)
