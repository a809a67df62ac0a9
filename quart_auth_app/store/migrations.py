"""Split a schema file into its numbered migrations (shared by both engines)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

MARKER = re.compile(r"^-- migration (\d+)\s*$", re.MULTILINE)


def split_migrations(text: str) -> list[tuple[int, list[str]]]:
    """Return [(number, [statement, ...]), ...] in file order."""
    parts = MARKER.split(text)
    migrations = []
    for number, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line.split("--", 1)[0] for line in body.splitlines()]
        statements = [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
        migrations.append((int(number), statements))
    return migrations


@cache
def newest_migration(schema: str) -> int:
    """The highest migration number in `sql/<schema>` (read once per process)."""
    text = resources.files("quart_auth_app").joinpath(f"sql/{schema}").read_text()
    return max(number for number, _ in split_migrations(text))
