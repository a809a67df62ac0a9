"""An app built on quart_auth_app: its sign-in, sessions and mail, plus a page of its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import Blueprint, Quart

from quart_auth_app import create_app as create_auth_app
from quart_auth_app.auth import login_required, signed_in_user

bp = Blueprint("notes", __name__)


@bp.get("/notes")
@login_required
async def notes() -> dict[str, Any]:
    """The signed-in user's notes (every user starts with a welcome note)."""
    user = signed_in_user()
    return {"owner": user.email, "notes": [f"Welcome, {user.name}."]}


def create_app(config: Mapping[str, Any] | None = None) -> Quart:
    """quart_auth_app's app, with the notes blueprint mounted on it."""
    app = create_auth_app(config)
    app.register_blueprint(bp)
    return app
