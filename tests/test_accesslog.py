"""The launcher's access-log atoms answer as Hypercorn's AccessLogAtoms does, key for key."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypercorn.logging import AccessLogAtoms

from quart_auth_app.accesslog import ATOMS, AccessAtoms
from quart_auth_app.serve import without_link_tokens

REQUEST: dict[str, Any] = {
    "type": "http",
    "http_version": "1.1",
    "method": "GET",
    "scheme": "https",
    "path": "/password/reset/secret-token",
    "query_string": b"next=%2Faccount",
    "headers": [
        (b"host", b"example.com"),
        (b"User-Agent", b"curl/8"),
        (b"referer", b"https://example.com/login"),
        (b"x-twice", b"one"),
        (b"x-twice", b"two"),
    ],
    "client": ("203.0.113.9", 50000),
}
RESPONSE: dict[str, Any] = {
    "status": 303,
    "headers": [(b"content-length", b"0"), (b"Location", b"/password/reset")],
}
KEYS = [
    *(key for key in ATOMS if key != "t"),  # "t" is the time of day: compared apart
    "{host}i",
    "{User-Agent}i",
    "{x-twice}i",
    "{absent}i",
    "{location}o",
    "{Content-Length}o",
    "{path}e",
    "{no_such_variable_xyz}e",
    "{host}x",
    "nonsense",
]


@pytest.mark.parametrize(
    ("request_", "response"),
    [
        (REQUEST, RESPONSE),
        (REQUEST, None),  # a request that got no response
        ({**REQUEST, "client": None, "query_string": b"", "type": "websocket"}, RESPONSE),
        ({**REQUEST, "client": ("unix-socket",)}, {**RESPONSE, "status": 799}),
    ],
)
def test_every_atom_is_hypercorns(request_: dict[str, Any], response: Any) -> None:
    theirs = AccessLogAtoms(request_, response, 0.012345)
    ours = AccessAtoms(request_, response, 0.012345)
    for key in KEYS:
        assert ours[key] == theirs[key], key
    assert len(ours["t"]) == len(theirs["t"])


def test_the_format_in_hypercorn_toml_gives_the_same_line() -> None:
    fmt = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'
    record = logging.LogRecord(
        "hypercorn.access", 20, "", 0, fmt, (AccessAtoms(REQUEST, RESPONSE, 0.5),), None
    )
    theirs = fmt % AccessLogAtoms(REQUEST, RESPONSE, 0.5)
    assert (
        record.getMessage()
        == theirs
        == ('203.0.113.9:50000 "GET /password/reset/secret-token 1.1" 303 0 0.500000s')
    )


def test_the_path_atoms_are_redacted() -> None:
    atoms = AccessAtoms(REQUEST, RESPONSE, 0.5, redact=without_link_tokens)
    assert atoms["r"] == "GET /password/reset/[token] 1.1"
    assert atoms["R"] == "GET /password/reset/[token]?next=%2Faccount 1.1"
    assert atoms["U"] == "/password/reset/[token]"
    assert atoms["Uq"] == "/password/reset/[token]?next=%2Faccount"
    assert "secret-token" not in str(dict(atoms))
