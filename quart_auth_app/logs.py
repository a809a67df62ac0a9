"""Log lines for operators (SPEC §13): Hypercorn's and Quart's plain text by default, one
JSON object a line with `LOG_FORMAT=json` (environment `QUART_LOG_FORMAT=json`), for the
app's own logger and Hypercorn's error and access logs alike.

What goes into a line is decided where it is logged: no token, password, code or reset
link (the launcher's access log writes `[token]` for a mailed link's token).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

FORMATS = ("text", "json")
ENVIRONMENT = "QUART_LOG_FORMAT"  # what a worker reads before the app's config exists
# Hypercorn's access-log atoms worth a field of their own (hypercorn.toml's format uses them).
ACCESS_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "h": ("client", str),
    "m": ("method", str),
    "U": ("path", str),
    "s": ("status", int),
    "b": ("bytes", int),
    "L": ("seconds", float),
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, pid, message; an
    access line's client, method, path, status, bytes and seconds; the traceback as text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        atoms = record.args
        if record.name == "hypercorn.access" and isinstance(atoms, Mapping):
            for atom, (field, kind) in ACCESS_FIELDS.items():
                with contextlib.suppress(KeyError, ValueError):  # "-": no body, say
                    entry[field] = kind(str(atoms[atom]))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_format(config: Mapping[str, object] | None = None) -> str:
    """The format the configuration (or, in a worker before the app exists, the environment)
    names; ValueError for anything but "text" or "json"."""
    value = str((config or {}).get("LOG_FORMAT") or os.environ.get(ENVIRONMENT) or "text").lower()
    if value not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def use_format(fmt: str, *loggers: logging.Logger) -> None:
    """Make `loggers` write `fmt` ("text" leaves them as they are). Each gets handlers of its
    own to the same streams: Quart's default handler is shared by every app in a process."""
    if fmt != "json":
        return
    for logger in loggers:
        streams = [h.stream for h in logger.handlers if isinstance(h, logging.StreamHandler)]
        handlers: list[logging.Handler] = []
        for stream in streams or [sys.stderr]:
            handler = logging.StreamHandler(stream)
            handler.setFormatter(JsonFormatter())
            handlers.append(handler)
        logger.handlers = handlers
