"""The HTML pages of the classic Flask login example (SPEC §3)."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from quart import Blueprint, Quart, Response, flash, jsonify, redirect, request, url_for
from quart.blueprints import BlueprintSetupState
from quart.typing import ResponseReturnValue
from quart_schema import hide
from werkzeug.exceptions import NotFound

from ..account import database_health
from ..auth import (
    authenticate,
    current_user,
    login_required,
    logout_user,
    read_credentials,
    register,
)
from ..errors import AppError, render_page
from ..factors import sign_in
from ..validation import text

bp = Blueprint("pages", __name__)
STATIC_NAME_MAX = 255  # bytes: longer than any file under static/, or than most file systems allow


def _bounded_static(state: BlueprintSetupState) -> None:
    """Quart's static view behind a bound on the name: a longer one (or a NUL) is a 404, not
    the OSError (ENAMETOOLONG) that Quart's send_from_directory lets out as a 500."""
    app = state.app
    if not isinstance(app, Quart) or "static" not in app.view_functions:
        return

    async def static(filename: str) -> Response:
        if len(filename.encode("utf-8", "replace")) > STATIC_NAME_MAX or "\x00" in filename:
            raise NotFound()
        return await app.send_static_file(filename)

    app.view_functions["static"] = hide(static)  # not part of the API's document


bp.record_once(_bounded_static)


def safe_next(target: str | None) -> str:
    """`target` when it is a path on this site, else `/` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ch in target for ch in "\\\r\n\t") or not target.isprintable():
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


@bp.get("/")
@hide
async def index() -> Response:
    user = current_user()
    return await render_page("index.html" if user else "landing.html", user=user)


@bp.get("/login")
@hide
async def login() -> Response:
    return await render_page("login.html", email="", next=safe_next(request.args.get("next")))


@bp.post("/login")
@hide
async def login_post() -> ResponseReturnValue:
    form = await request.form
    typed = text(form, "email") or text(form, "username")
    next_url = safe_next(text(form, "next") or request.args.get("next"))
    try:
        user = await authenticate(*read_credentials(form))
    except AppError as error:
        return await render_page("login.html", error, email=typed[:254], next=next_url)
    if not await sign_in(user, remember=bool(form.get("remember"))):
        return redirect(f"{url_for('two_step.verify')}?next={quote(next_url, safe='/')}", 303)
    await flash(f"Welcome, {user.name}!", "success")
    return redirect(next_url, 303)


@bp.get("/register")
@hide
async def register_form() -> Response:
    return await render_page("register.html", form={})


@bp.post("/register")
@hide
async def register_post() -> ResponseReturnValue:
    form = await request.form
    try:
        signup = await register(form)
    except AppError as error:
        kept = {"email": text(form, "email")[:254], "name": text(form, "name")[:100]}
        return await render_page("register.html", error, form=kept)
    if not signup.complete:  # a retried sign-up of an account with two-step sign-in on
        return redirect(url_for("two_step.verify"), 303)
    welcome = "Your account is ready." if signup.created else "You are signed in."
    await flash(f"Welcome, {signup.user.name}! {welcome}", "success")
    return redirect("/", 303)


@bp.get("/logout")
@hide
async def logout() -> Response:
    return await render_page("logout.html", user=current_user())


@bp.post("/logout")
@hide
async def logout_post() -> ResponseReturnValue:
    signed_in = current_user() is not None
    await logout_user()
    if signed_in:  # a cookieless POST changes nothing, so it writes nothing (SPEC §7)
        await flash("You have been logged out.", "info")
    return redirect("/login", 303)


@bp.get("/protected")
@hide
@login_required
async def protected() -> Response:
    return await render_page("protected.html", user=current_user())


@bp.get("/healthz")
@hide
async def healthz() -> Response:
    engine, ok = await database_health()
    response = jsonify({"status": "ok" if ok else "unavailable", "engine": engine})
    response.status_code = 200 if ok else 503
    return response
