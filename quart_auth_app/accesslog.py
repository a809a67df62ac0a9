"""Hypercorn's access-log atoms, each computed when the log format asks for it (SPEC §10).

Hypercorn's `AccessLogAtoms` is a dict of every atom, built for every request: each
request and response header, every environment variable (`os.environ` decoded on each
request), the time formatted, the status's phrase. The format in hypercorn.toml reads
five of them. `AccessAtoms` answers the same keys with the same values (a missing one is
"-"), computing only those read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from http import HTTPStatus
from typing import Any

MISSING = "-"
REDACTED = ("r", "R", "U", "Uq")  # the atoms holding the path


def _headers(headers: Any, name: str) -> str:
    """The last value of header `name` (lower case), as Hypercorn's dict keeps it."""
    found = MISSING
    for key, value in headers or ():
        if key.decode("latin1").lower() == name:
            found = value.decode("latin1")
    return found


def _environ(name: str) -> str:
    found = MISSING
    for key, value in os.environ.items():
        if key.lower() == name:
            found = value
    return found


class AccessAtoms(Mapping[str, Any]):
    """The atoms of one access-log line; `redact` rewrites those holding the path."""

    def __init__(
        self,
        request: Any,
        response: Any,
        request_time: float,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.request = request
        self.response = response
        self.request_time = request_time
        self.redact = redact

    def __getitem__(self, key: str) -> Any:
        if key.startswith("{"):  # {name}i, {name}o, {name}e: request and response headers,
            name, kind = key[1:-2].lower(), key[-1:]  # environment variables
            if key[-2:-1] != "}":
                return MISSING
            if kind == "i":
                return _headers(self.request["headers"], name)
            if kind == "o":
                return _headers((self.response or {}).get("headers"), name)
            if kind == "e":
                return _environ(name)
            return MISSING
        atom = ATOMS.get(key)
        if atom is None:
            return MISSING
        value = atom(self)
        if self.redact is not None and key in REDACTED:
            value = self.redact(value)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(ATOMS)

    def __len__(self) -> int:
        return len(ATOMS)

    # What Hypercorn's AccessLogAtoms computes for each key, written out.
    def client(self) -> str | None:
        client = self.request.get("client")
        if client is None:
            return None
        if len(client) == 2:
            return f"{client[0]}:{client[1]}"
        if len(client) == 1:
            return str(client[0])
        return f"<???{client}???>"

    def method(self) -> str:
        return str(self.request["method"]) if self.request["type"] == "http" else "GET"

    def protocol(self) -> str:
        return str(self.request.get("http_version", "ws"))

    def query(self) -> str:
        return str(self.request["query_string"].decode())

    def path_with_query(self) -> str:
        query = self.query()
        return str(self.request["path"]) + ("?" + query if query else "")

    def status(self) -> str:
        return MISSING if self.response is None else str(self.response["status"])

    def phrase(self) -> str:
        if self.response is None:
            return MISSING
        try:
            return HTTPStatus(self.response["status"]).phrase
        except ValueError:
            return f"<???{self.response['status']}???>"


ATOMS: dict[str, Callable[[AccessAtoms], Any]] = {
    "h": AccessAtoms.client,
    "l": lambda a: MISSING,
    "t": lambda a: time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
    "r": lambda a: f"{a.method()} {a.request['path']} {a.protocol()}",
    "R": lambda a: f"{a.method()} {a.path_with_query()} {a.protocol()}",
    "s": AccessAtoms.status,
    "st": AccessAtoms.phrase,
    "S": lambda a: a.request["scheme"],
    "m": AccessAtoms.method,
    "U": lambda a: a.request["path"],
    "Uq": AccessAtoms.path_with_query,
    "q": AccessAtoms.query,
    "H": AccessAtoms.protocol,
    "b": lambda a: a["{Content-Length}o"],
    "B": lambda a: a["{Content-Length}o"],
    "f": lambda a: a["{Referer}i"],
    "a": lambda a: a["{User-Agent}i"],
    "T": lambda a: int(a.request_time),
    "D": lambda a: int(a.request_time * 1_000_000),
    "L": lambda a: f"{a.request_time:.6f}",
    "p": lambda a: f"<{os.getpid()}>",
}
