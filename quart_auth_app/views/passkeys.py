"""Passkeys on the account page: rename and remove, without JavaScript (SPEC §12).

Adding one and signing in with one need the browser's WebAuthn API: static/passkeys.js
does them through the JSON API.
"""

from __future__ import annotations

from quart import Blueprint, flash, redirect, request, url_for
from quart.typing import ResponseReturnValue
from quart_schema import hide

from ..auth import login_required, signed_in_user
from ..errors import AppError
from ..lifecycle import reauth_required
from ..passkeys import list_passkeys, remove_passkey, rename_passkey
from ..store import Passkey, User

bp = Blueprint("passkeys", __name__)


@bp.app_template_global("passkeys_of")
async def passkeys_of(user: User) -> list[Passkey]:
    """The user's passkeys, for templates/_passkeys.html on the account page."""
    return await list_passkeys(user)


def _back() -> ResponseReturnValue:
    return redirect(url_for("account.account", _anchor="passkeys"), 303)


@bp.post("/account/passkeys/<passkey_id>/rename")
@hide
@login_required
async def rename(passkey_id: str) -> ResponseReturnValue:
    form = await request.form
    try:
        name = await rename_passkey(signed_in_user(), passkey_id, form.get("name"))
    except AppError as error:
        await flash(" ".join(error.fields.values()) or error.message, "danger")
        return _back()
    await flash(f"The passkey is now called “{name}”.", "success")
    return _back()


@bp.get("/account/passkeys/<passkey_id>/remove")
@hide
@login_required
@reauth_required
async def removal_confirmed(passkey_id: str) -> ResponseReturnValue:
    """Where re-authentication comes back to after a removal asked for it: the account
    page, where the passkey's Remove button now works."""
    await flash("Thank you. You can remove the passkey now.", "info")
    return _back()


@bp.post("/account/passkeys/<passkey_id>/remove")
@hide
@login_required
@reauth_required
async def remove(passkey_id: str) -> ResponseReturnValue:
    try:
        await remove_passkey(signed_in_user(), passkey_id)
    except AppError as error:
        await flash(error.message, "danger")
        return _back()
    await flash("The passkey was removed. Other sessions were signed out.", "success")
    return _back()
