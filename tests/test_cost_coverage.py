"""The CPU-cost searches (tests/test_cost.py, tests/test_cost_signed_in.py) cover every route
of the app by construction: a route in neither search nor EXEMPT fails here, so a route
added without a search cannot go unnoticed (SPEC §7, "Bounded cost")."""

from __future__ import annotations

import re
from pathlib import Path

import test_cost
import test_cost_signed_in
from quart import Quart

from quart_auth_app import create_app

# (method, rule) -> why no search sends it requests, parameters written "{}". Empty: every
# route is searched, static files, health, readiness, metrics and account deletion included
# (a deleted standing user signs up again, see Standing.restore).
EXEMPT: dict[tuple[str, str], str] = {}


def new_app(tmp_path: Path) -> Quart:
    return create_app({"TESTING": True, "SECRET_KEY": "test", "DATABASE": str(tmp_path / "a.db")})


def normalised(path: str) -> str:
    """A rule or a search's path with every parameter as "{}": /api/passkeys/<passkey_id>
    and /api/passkeys/{passkey} are the same route."""
    return re.sub(r"\{[^}]*\}", "{}", re.sub(r"<[^>]*>", "{}", path))


def searched() -> set[tuple[str, str]]:
    """Every (method, route) some cost search sends requests to."""
    anonymous = test_cost.ROUTES + test_cost.LIGHT_ROUTES
    signed_in = [
        (r.method, r.path) for r in test_cost_signed_in.ROUTES + test_cost_signed_in.LIGHT_ROUTES
    ]
    return {(method, normalised(path)) for method, path in anonymous + signed_in}


def routes(app: Quart) -> set[tuple[str, str]]:
    """Every (method, rule) the app answers, besides the HEAD and OPTIONS Quart adds."""
    return {
        (method, normalised(rule.rule))
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }


def test_every_route_has_a_cost_search(tmp_path: Path) -> None:
    missing = routes(new_app(tmp_path)) - searched() - set(EXEMPT)
    assert not missing, f"routes without a CPU-cost search (add them, or to EXEMPT): {missing}"


def test_a_new_route_without_a_search_is_noticed(tmp_path: Path) -> None:
    app = new_app(tmp_path)
    app.add_url_rule("/api/things/<int:thing_id>", "thing", lambda thing_id: "", methods=["PUT"])
    assert routes(app) - searched() - set(EXEMPT) == {("PUT", "/api/things/{}")}


def test_the_searches_and_exemptions_name_only_real_routes(tmp_path: Path) -> None:
    """A route renamed or removed leaves no stale entry behind (it would read as coverage)."""
    stale = (searched() | set(EXEMPT)) - routes(new_app(tmp_path))
    assert not stale, f"searched or exempt but not a route: {stale}"
    assert not searched() & set(EXEMPT), "a route both searched and exempt"
