"""Pages of two-step sign-in: the second step, and turning TOTP on and off (SPEC §12)."""

from __future__ import annotations

from quart import Blueprint, Response, flash, redirect, request, url_for
from quart.typing import ResponseReturnValue
from quart_schema import hide

from ..auth import login_required, server_session, signed_in_user
from ..clock import now
from ..errors import AppError, render_page
from ..factors import (
    begin_totp,
    confirm_totp,
    disable_totp,
    pending_secret,
    provisioning,
    regenerate_codes,
    status,
    verify_pending,
)
from ..lifecycle import reauth_first, reauth_required
from ..validation import text
from .pages import safe_next

bp = Blueprint("two_step", __name__)
HERE = "/account/two-step"


@bp.get("/login/verify")
@hide
async def verify() -> ResponseReturnValue:
    if server_session().pending(now()) is None:
        return redirect(url_for("pages.login"), 303)
    return await render_page("login_verify.html", next=safe_next(request.args.get("next")))


@bp.post("/login/verify")
@hide
async def verify_post() -> ResponseReturnValue:
    form = await request.form
    next_url = safe_next(text(form, "next"))
    try:
        user = await verify_pending(form)
    except AppError as error:
        if error.code == "second_factor_expired":
            if server_session().record is not None:  # a stranger's post stores nothing
                await flash("That took too long. Please sign in again.", "info")
            return redirect(url_for("pages.login"), 303)
        return await render_page("login_verify.html", error, next=next_url)
    await flash(f"Welcome, {user.name}!", "success")
    return redirect(next_url, 303)


@bp.get(HERE)
@hide
@login_required
@reauth_required
async def manage() -> Response:
    on, left = await status(signed_in_user())
    return await render_page("two_step.html", on=on, left=left)


@bp.post(f"{HERE}/begin")
@hide
@login_required
@reauth_first(HERE)
async def begin() -> ResponseReturnValue:
    return await _setup_page(await begin_totp(signed_in_user()))


async def _setup_page(secret: str, error: AppError | None = None) -> Response:
    uri, qr = provisioning(signed_in_user(), secret)
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return await render_page("two_step_setup.html", error, secret=grouped, uri=uri, qr=qr)


@bp.post(f"{HERE}/confirm")
@hide
@login_required
async def confirm() -> ResponseReturnValue:
    form = await request.form
    user = signed_in_user()
    try:
        codes = await confirm_totp(user, form)
    except AppError as error:
        secret = await pending_secret(user)
        if secret is None:
            return await render_page("error.html", error)
        return await _setup_page(secret, error)
    await flash("Two-step sign-in is on. Other sessions were signed out.", "success")
    return await render_page("recovery_codes.html", codes=codes)


@bp.post(f"{HERE}/disable")
@hide
@login_required
@reauth_first(HERE)
async def disable() -> ResponseReturnValue:
    await disable_totp(signed_in_user())
    await flash("Two-step sign-in is off. Other sessions were signed out.", "info")
    return redirect(url_for("account.account"), 303)


@bp.post(f"{HERE}/recovery-codes")
@hide
@login_required
@reauth_first(HERE)
async def new_codes() -> ResponseReturnValue:
    codes = await regenerate_codes(signed_in_user())
    return await render_page("recovery_codes.html", codes=codes)
