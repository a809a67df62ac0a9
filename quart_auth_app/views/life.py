"""The account's life in pages: re-authentication, email change, deletion, export (§11, §12)."""

from __future__ import annotations

import json

from quart import Blueprint, Response, flash, redirect, request, url_for
from quart.typing import ResponseReturnValue
from quart_schema import hide

from ..auth import login_required, signed_in_user, unverified_ok
from ..errors import AppError, render_page
from ..lifecycle import delete_account, export, reauth_first, reauth_required
from ..lifecycle import reauthenticate as reauthenticate_user
from ..recovery import request_email_change
from ..validation import text
from .pages import safe_next

bp = Blueprint("life", __name__)


@bp.get("/reauthenticate")
@hide
@login_required
@unverified_ok
async def reauthenticate_form() -> Response:
    return await render_page(
        "reauthenticate.html", user=signed_in_user(), next=safe_next(request.args.get("next"))
    )


@bp.post("/reauthenticate")
@hide
@login_required
@unverified_ok
async def reauthenticate() -> ResponseReturnValue:
    form = await request.form
    user = signed_in_user()
    next_url = safe_next(text(form, "next"))
    try:
        await reauthenticate_user(user, form)
    except AppError as error:
        return await render_page("reauthenticate.html", error, user=user, next=next_url)
    return redirect(next_url, 303)


@bp.get("/account/email")
@hide
@login_required
@unverified_ok
@reauth_required
async def email_form() -> Response:
    return await render_page("change_email.html", user=signed_in_user(), new_email="")


@bp.post("/account/email")
@hide
@login_required
@unverified_ok
@reauth_first("/account/email")
async def email_post() -> ResponseReturnValue:
    form = await request.form
    user = signed_in_user()
    try:
        new_email = await request_email_change(user, form)
    except AppError as error:
        kept = text(form, "new_email")[:254]
        return await render_page("change_email.html", error, user=user, new_email=kept)
    await flash(
        f"A confirmation link is on its way to {new_email}. "
        "Your address changes when you follow it.",
        "info",
    )
    return redirect(url_for("account.account"), 303)


@bp.get("/account/delete")
@hide
@login_required
@unverified_ok
@reauth_required
async def delete_form() -> Response:
    return await render_page("delete_account.html", user=signed_in_user())


@bp.post("/account/delete")
@hide
@login_required
@unverified_ok
@reauth_first("/account/delete")
async def delete_post() -> ResponseReturnValue:
    form = await request.form
    user = signed_in_user()
    try:
        await delete_account(user, form)
    except AppError as error:
        return await render_page("delete_account.html", error, user=user)
    await flash("Your account has been deleted. Goodbye!", "info")
    return redirect(url_for("pages.index"), 303)


@bp.get("/account/export")
@hide
@login_required
@unverified_ok
async def export_download() -> Response:
    body = json.dumps(await export(signed_in_user()), indent=2)
    response = Response(body, mimetype="application/json")
    response.headers["Content-Disposition"] = 'attachment; filename="account-export.json"'
    return response
