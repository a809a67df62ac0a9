"""The JSON API (SPEC §4): same cookie, same sessions, same domain functions as the pages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import ConfigDict, Field, WithJsonSchema
from quart import Blueprint, Response, request
from quart_schema import (
    document_response,
    security_scheme,
    validate_querystring,
    validate_request,
    validate_response,
)
from werkzeug.routing import BaseConverter

from ..agents import label
from ..auth import (
    authenticate,
    change_password,
    list_sessions,
    login_required,
    login_user,
    logout_user,
    read_credentials,
    register,
    revoke_other_sessions,
    revoke_session,
    server_session,
    signed_in_user,
)
from ..errors import AppError, ErrorOut
from ..openapi import FROM_CONFIG, NoContent, sets_session_cookie
from ..store import User
from ..validation import EMAIL_MAX, NAME_MAX

bp = Blueprint("api", __name__, url_prefix="/api")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
SIGNED_IN: list[dict[str, list[str]]] = [
    {"cookieAuth": []}
]  # the OpenAPI security requirement: the session cookie
MAYBE_SIGNED_IN: list[dict[str, list[str]]] = [{}, {"cookieAuth": []}]  # with or without it
V = TypeVar("V", bound=Callable[..., Any])


class SessionIdConverter(BaseConverter):
    """A session id: one path segment, but not the name of a sibling route (without this,
    DELETE /api/sessions/revoke-others would be routed to the revocation of one session)."""

    regex = r"(?!revoke-others\Z)[^/]+"


bp.record_once(lambda state: state.app.url_map.converters.update(session_id=SessionIdConverter))


def _doc(description: str, settings: dict[str, str] | None = None, **schema: Any) -> Any:
    """A field's description and bounds as the server checks them (validation.py), for the
    document only: the rules run in the domain functions, for the pages and the API alike.

    `settings` maps a keyword to a configuration key, whose value the document shows.
    """
    extra: dict[str, Any] = {"description": description, **schema}
    if settings:
        extra[FROM_CONFIG] = settings
    return Field(json_schema_extra=extra)


EMAIL_RULES = (
    f"Trimmed, NFC-normalised and lower-cased before use; at most {EMAIL_MAX} characters then."
)
NewEmail = Annotated[
    str,
    _doc(
        f"The account's email (internationalised addresses are fine). {EMAIL_RULES}",
        format="idn-email",
        minLength=1,
        maxLength=EMAIL_MAX,
    ),
]
SignInEmail = Annotated[
    str,
    _doc(
        f"The email the account was registered with. {EMAIL_RULES} Any other string "
        "is refused as wrong credentials (401).",
        format="idn-email",
        minLength=1,
        maxLength=EMAIL_MAX,
    ),
]
NewPassword = Annotated[
    str,
    _doc(
        "Counted in characters (code points), as sent. It must also be hard enough to "
        "guess (zxcvbn), which is judged on the server: a weak one is refused with 400.",
        {"minLength": "PASSWORD_MIN_LENGTH", "maxLength": "PASSWORD_MAX_LENGTH"},
    ),
]
Password = Annotated[
    str,
    _doc(
        "The account's password, as registered.",
        {"maxLength": "PASSWORD_MAX_LENGTH"},
        minLength=1,
    ),
]
CurrentPassword = Annotated[
    str,
    _doc(
        "The account's password now. Anything else, however long or short, is refused "
        "as a wrong password (403).",
        {"maxLength": "PASSWORD_MAX_LENGTH"},
        minLength=1,
    ),
]
Name = Annotated[
    str,
    _doc(
        f"Display name, trimmed and NFC-normalised: at most {NAME_MAX} characters then, "
        "no control characters. Empty or absent: the email's local part.",
        maxLength=NAME_MAX,
        pattern="^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
    ),
]
# pydantic reads JSON leniently: 0/1 and a few words count as booleans, and clients may rely
# on that, so the document says so rather than the server refusing them now.
REMEMBER = {
    "description": "Keep the session (and its cookie) for REMEMBER_LIFETIME seconds. "
    "Send a JSON boolean; 0 and 1, and the strings true/false, t/f, yes/no, y/n, on/off "
    "and 1/0 (in any case) are read as booleans too.",
    "anyOf": [
        {"type": "boolean"},
        {"enum": [0, 1]},
        {
            "type": "string",
            "pattern": "^(?:[Tt](?:[Rr][Uu][Ee])?|[Ff](?:[Aa][Ll][Ss][Ee])?|[Yy](?:[Ee][Ss])?"
            "|[Nn][Oo]?|[Oo](?:[Nn]|[Ff][Ff])|[01])$",
        },
    ],
}
Timestamp = Annotated[float, _doc("Seconds since the Unix epoch (UTC).")]


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    """Model settings: these examples in the document."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


def _closed(*examples: dict[str, Any]) -> ConfigDict:
    """Answers never carry other members (a leak would fail the schema)."""
    return ConfigDict(json_schema_extra={"examples": list(examples), "additionalProperties": False})


ADA = {"email": "ada@example.com", "password": "correct horse battery staple"}


@dataclass
class RegisterIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = _examples({**ADA, "name": "Ada"})
    email: NewEmail
    password: NewPassword
    name: Name | None = None


@dataclass
class LoginIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = _examples({**ADA, "remember": True})
    email: SignInEmail
    password: Password
    remember: Annotated[bool, WithJsonSchema(REMEMBER)] = False


@dataclass
class PasswordIn:
    """Unknown members are ignored."""

    __pydantic_config__: ClassVar[ConfigDict] = _examples(
        {"current_password": ADA["password"], "new_password": "a new, longer passphrase 9"}
    )
    current_password: CurrentPassword
    new_password: NewPassword


@dataclass
class UserOut:
    """The account."""

    __pydantic_config__: ClassVar[ConfigDict] = _closed(
        {"id": 1, "email": "ada@example.com", "name": "Ada"}
    )
    id: Annotated[int, _doc("The account's id.", minimum=1)]
    email: Annotated[str, _doc("The stored (normalised) email.", maxLength=EMAIL_MAX)]
    name: Annotated[str, _doc("Display name.", minLength=1, maxLength=NAME_MAX)]


SESSION = {
    "id": "Jq3Yx0H5bQ2yq3m1ZLkV0w",
    "current": True,
    "user_agent": "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "device": "Firefox 128 on Ubuntu",
    "ip": "203.0.113.7",
    "created_at": 1767225600.0,
    "last_seen": 1767229200.0,
    "expires_at": 1767312000.0,
    "remember": False,
}


@dataclass
class SessionOut:
    """One live session of the user."""

    __pydantic_config__: ClassVar[ConfigDict] = _closed(SESSION)
    id: Annotated[str, _doc("Pass to DELETE /api/sessions/{session_id}.", minLength=1)]
    current: Annotated[bool, Field(description="Whether this is the session of this request.")]
    user_agent: str
    device: Annotated[str, _doc("Readable, e.g. `Firefox 128 on Ubuntu`.")]
    ip: Annotated[str, _doc("The client address when the session was last seen.")]
    created_at: Timestamp
    last_seen: Timestamp
    expires_at: Annotated[
        float,
        _doc("When it ends unless used again (idle timeout) or at the latest (absolute lifetime)."),
    ]
    remember: bool


@dataclass
class SessionsOut:
    """A page of the user's live sessions, most recently used first."""

    __pydantic_config__: ClassVar[ConfigDict] = _closed({"sessions": [SESSION], "next_offset": 50})
    sessions: list[SessionOut]
    # pass as `offset` for the next page; None: no more
    next_offset: Annotated[int, _doc("Pass as `offset` for the next page.", minimum=1)] | None = (
        None
    )


@dataclass
class PageQuery:
    limit: Annotated[int, Field(ge=1, le=100, description="Sessions per page.")] = 50
    offset: Annotated[
        int, Field(ge=0, le=100_000, description="How many to skip: a `next_offset`.")
    ] = 0


@dataclass
class RevokedOut:
    """How many sessions ended."""

    __pydantic_config__: ClassVar[ConfigDict] = _closed({"revoked": 2})
    revoked: Annotated[int, _doc("How many sessions ended.", minimum=0)]


def refuses(*statuses: int) -> Callable[[V], V]:
    """Document the refusals a view itself can answer with (openapi.py adds the app-wide ones:
    400, 503, and for writes 403, 413 and 415), each with the shared error model."""

    def decorate(view: V) -> V:
        for status in statuses:
            view = document_response(ErrorOut, status)(view)
        return view

    return decorate


def _user_out(user: User) -> UserOut:
    return UserOut(id=user.id, email=user.email, name=user.name)


@bp.before_request
async def require_json() -> None:
    """Bodies must be JSON: a form post from another page can never reach the API."""
    bodiless = not request.mimetype and not request.content_length  # e.g. curl -X POST .../logout
    if request.method in BODY_METHODS and request.mimetype != "application/json" and not bodiless:
        raise AppError(
            415, "unsupported_media_type", "Send JSON with Content-Type: application/json."
        )
    if request.method in BODY_METHODS:
        # Quart decodes the body as UTF-8 before parsing; bad bytes would surface as a 500.
        try:
            (await request.get_data(True, False, False)).decode("utf-8")
        except UnicodeDecodeError:
            raise AppError(400, "invalid_json", "The body must be UTF-8 encoded JSON.") from None


@bp.post("/register")
@sets_session_cookie
@refuses(400, 409, 429)
@validate_request(RegisterIn)
@validate_response(UserOut, 201)
async def api_register(data: RegisterIn) -> tuple[UserOut, int]:
    """Create an account and sign it in."""
    user = await register(data.__dict__)
    return _user_out(user), 201


@bp.post("/login")
@sets_session_cookie
@refuses(400, 401, 429)
@validate_request(LoginIn)
@validate_response(UserOut, 200)
async def api_login(data: LoginIn) -> UserOut:
    """Sign in; the response sets the session cookie."""
    user = await authenticate(*read_credentials(data.__dict__))
    await login_user(user, remember=data.remember)
    return _user_out(user)


@bp.get("/me")
@security_scheme(SIGNED_IN)
@refuses(401)
@validate_response(UserOut, 200)
@login_required
async def api_me() -> UserOut:
    """The signed-in user."""
    user = signed_in_user()
    return _user_out(user)


@bp.post("/logout")
@security_scheme(MAYBE_SIGNED_IN)
@document_response(NoContent, 204)
async def api_logout() -> Response:
    """End the session; its cookie is worthless afterwards."""
    await logout_user()
    return Response("", status=204)


@bp.get("/sessions")
@security_scheme(SIGNED_IN)
@refuses(401)
@validate_querystring(PageQuery)
@validate_response(SessionsOut, 200)
@login_required
async def api_sessions(query_args: PageQuery) -> SessionsOut:
    """The signed-in user's active sessions, most recently used first, a page at a time."""
    user = signed_in_user()
    mine = server_session().token_hash
    records, more = await list_sessions(user, query_args.offset, query_args.limit)
    return SessionsOut(
        next_offset=query_args.offset + len(records) if more else None,
        sessions=[
            SessionOut(
                id=r.id,
                current=r.token_hash == mine,
                user_agent=r.user_agent,
                device=label(r.device, r.user_agent),
                ip=r.ip,
                created_at=r.created_at,
                last_seen=r.last_seen,
                expires_at=r.expires_at,
                remember=r.remember,
            )
            for r in records
        ],
    )


@bp.delete("/sessions/<session_id:session_id>")
@security_scheme(SIGNED_IN)
@refuses(401, 404, 429)
@document_response(NoContent, 204)
@login_required
async def api_revoke_session(session_id: str) -> Response:
    """Revoke one of the user's sessions."""
    user = signed_in_user()
    await revoke_session(user, session_id)
    return Response("", status=204)


@bp.post("/sessions/revoke-others")
@security_scheme(SIGNED_IN)
@refuses(401, 429)
@validate_response(RevokedOut, 200)
@login_required
async def api_revoke_others() -> RevokedOut:
    """Revoke every session of the user except this one."""
    user = signed_in_user()
    return RevokedOut(revoked=await revoke_other_sessions(user))


@bp.post("/password")
@sets_session_cookie
@security_scheme(SIGNED_IN)
@refuses(400, 401, 403, 429)
@validate_request(PasswordIn)
@document_response(NoContent, 204)
@login_required
async def api_password(data: PasswordIn) -> Response:
    """Change the password: every other session ends, this one gets a new token."""
    user = signed_in_user()
    await change_password(user, data.__dict__)
    return Response("", status=204)
