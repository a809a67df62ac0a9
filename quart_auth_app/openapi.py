"""The OpenAPI document, with what quart-schema leaves out of it.

Bodiless 204 answers, request bodies that are required, one shared error model, every
refusal the app-wide hooks can answer with, the session cookie as the security scheme,
the Set-Cookie of a sign-in and the Retry-After of a 429, and the bounds that come from
the configuration — so the document says exactly what the API does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from quart_schema import DataSource, OpenAPIProvider
from quart_schema.typing import Model
from werkzeug.routing import Rule

from .errors import HTTP_CODES, ErrorOut

F = TypeVar("F", bound=Callable[..., Any])

ERROR_REF = {"$ref": "#/components/schemas/Error"}
# A schema value {"x-from-config": {"maxLength": "PASSWORD_MAX_LENGTH"}} becomes
# {"maxLength": <that setting>}: the bounds follow the app's configuration.
FROM_CONFIG = "x-from-config"
SETS_COOKIE = "_quart_auth_app_sets_cookie"

# Refusals that come from app-wide hooks (security.py, the store check, api.require_json),
# whatever the route: what each method can meet before any view runs.
EVERY_REQUEST = (400, 503)  # an address with too many parameters; the database down
UNSAFE_METHODS = (403, 413)  # a cross-origin write; a body past MAX_CONTENT_LENGTH
BODY_METHODS = (415,)  # a body that is not JSON


def _example(code: str, message: str, fields: dict[str, str] | None = None) -> dict[str, Any]:
    example: dict[str, Any] = {"error": code, "message": message}
    if fields:
        example["fields"] = fields
    return example


# Per status: what it means, and examples of the error model.
REFUSALS: dict[int, tuple[str, list[dict[str, Any]]]] = {
    400: (
        "Malformed or invalid input; `fields` names each wrong field.",
        [
            _example(
                "invalid_input",
                "Please correct the fields shown.",
                {"email": "Please enter a valid email address."},
            ),
            _example("invalid_json", "The body must be a JSON object."),
        ],
    ),
    401: (
        "Not signed in (no cookie, or an expired or revoked session), or wrong credentials.",
        [
            _example(*HTTP_CODES[401]),
            _example("invalid_credentials", "Invalid credentials. Please try again."),
        ],
    ),
    403: (
        "A cross-origin write, or (changing the password) a wrong current password.",
        [
            _example("cross_origin", "Cross-origin request refused."),
            _example(
                "wrong_password",
                "The current password is not right.",
                {"current_password": "The current password is not right."},
            ),
        ],
    ),
    404: (
        "No such session or passkey among the user's.",
        [_example("not_found", "There is no such session.")],
    ),
    409: (
        "The email is already registered.",
        [
            _example(
                "email_taken",
                "An account with this email already exists. Sign in instead?",
                {"email": "This email is already registered."},
            )
        ],
    ),
    413: ("The body is larger than the server accepts.", [_example(*HTTP_CODES[413])]),
    415: (
        "The body is not JSON: send `Content-Type: application/json`.",
        [_example(*HTTP_CODES[415])],
    ),
    429: (
        "Too many attempts: wait `Retry-After` seconds.",
        [_example("too_many_attempts", "Too many attempts. Please wait 15 minutes and try again.")],
    ),
    503: ("The database is unavailable; try again soon.", [_example(*HTTP_CODES[503])]),
}

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


@dataclass
class NoContent:
    """No body: the status says it all."""


def sets_session_cookie(view: F) -> F:
    """Document that the view's success answer carries a new session cookie."""
    setattr(view, SETS_COOKIE, True)
    return view


def _error_model() -> dict[str, Any]:
    """The shared error model: `{"error", "message", "fields"?}`."""
    return {
        "title": "Error",
        "type": "object",
        "description": "Every refusal of the API has this shape (SPEC §4).",
        "properties": {
            "error": {
                "type": "string",
                "pattern": "^[a-z_]+$",
                "description": "A stable code for programs, e.g. `invalid_input`, "
                "`invalid_credentials`, `email_taken`, `too_many_attempts`.",
            },
            "message": {"type": "string", "description": "A sentence for people."},
            "fields": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Per input field, what is wrong with it (400, 403, 409).",
            },
        },
        "required": ["error", "message"],
        "additionalProperties": False,
    }


def _refusal(status: int) -> dict[str, Any]:
    description, examples = REFUSALS[status]
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {
                "schema": ERROR_REF,
                "examples": {example["error"]: {"value": example} for example in examples},
            }
        },
    }
    if status == 429:
        response["headers"] = RETRY_AFTER
    return response


class OpenAPI(OpenAPIProvider):
    """quart-schema's provider, made precise about errors, bodies, cookies and throttling."""

    _document: dict[str, Any] | None = None

    def build_response_object(
        self, model: type[Model], headers_model: type[Model] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is NoContent:
            return {"description": "No content."}, {}
        if model is ErrorOut:
            return {"description": "", "content": {}}, {}  # filled in by _refusal
        return super().build_response_object(model, headers_model)

    def build_request_body(
        self, model: type[Model], source: DataSource
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        body, definitions = super().build_request_body(model, source)
        body["required"] = True
        return body, definitions

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        for operations in paths.values():
            for method, operation in operations.items():
                responses = operation["responses"] = dict(operation["responses"])
                statuses = [*EVERY_REQUEST]
                if method.upper() not in ("GET", "HEAD", "OPTIONS"):
                    statuses += UNSAFE_METHODS
                if method.upper() in ("POST", "PUT", "PATCH"):
                    statuses += BODY_METHODS
                for status in statuses:
                    responses.setdefault(status, {})
                for status in [s for s in responses if int(s) >= 400]:
                    responses[status] = _refusal(int(status))
                if getattr(view, SETS_COOKIE, False):
                    for status in [s for s in responses if int(s) < 300]:
                        responses[status] = {**responses[status], "headers": self._set_cookie()}
        return paths, components

    def _set_cookie(self) -> dict[str, Any]:
        name = self._app.config["SESSION_COOKIE_NAME"]
        return {
            "Set-Cookie": {
                "description": f"The new session cookie `{name}` (HttpOnly, SameSite=Lax): "
                "send it back with every request that needs sign-in.",
                "required": True,
                "schema": {"type": "string"},
            }
        }

    def schema(self) -> dict[str, Any]:
        """The document, built on first use only: the routes do not change while serving,
        and building it costs 20-30 ms of CPU (rebuilt per request, /openapi.json alone
        saturated the server at ~90 requests/s)."""
        if self._document is None:
            self._document = self._build()
        return self._document

    def _build(self) -> dict[str, Any]:
        document: dict[str, Any] = _resolve(super().schema(), self._app.config)
        components = document.setdefault("components", {})
        components.setdefault("schemas", {})["Error"] = _error_model()
        components["securitySchemes"] = {
            "cookieAuth": {
                "type": "apiKey",
                "in": "cookie",
                "name": self._app.config["SESSION_COOKIE_NAME"],
                "description": "The session cookie that POST /api/login (or /api/register) "
                "sets. Browsers send it by themselves; other clients keep it and send it back.",
            }
        }
        return document


def _resolve(value: Any, config: Any) -> Any:
    """`value` with each FROM_CONFIG marker replaced by the configured numbers."""
    if isinstance(value, list):
        return [_resolve(item, config) for item in value]
    if not isinstance(value, dict):
        return value
    resolved = {key: _resolve(item, config) for key, item in value.items() if key != FROM_CONFIG}
    for key, setting in value.get(FROM_CONFIG, {}).items():
        resolved[key] = int(config[setting])
    return resolved
