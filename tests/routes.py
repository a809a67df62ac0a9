"""Every route of the app as requests to send, for sweeps that must not miss a new one."""

from __future__ import annotations

import re

from quart import Quart

PARAMETER = re.compile(r"<(?:[^:<>]+:)?[^:<>]+>")


def every_request(app: Quart, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(method, path) for every method of every rule but static files and rules containing
    a word of `skip`; each parameter filled with "x"."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or any(word in rule.rule for word in skip):
            continue
        path = PARAMETER.sub("x", rule.rule)
        found += [(m, path) for m in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})]
    return found
