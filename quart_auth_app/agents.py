"""Readable device names ("Firefox 128 on Ubuntu") from User-Agent headers.

ua-parser tries hundreds of regexes: a crafted 512-character agent costs ~7 ms of CPU.
So the name is worked out once, when a session or an event is recorded, from a
bounded prefix, and stored; pages never parse (SPEC §7: nothing expensive per render).
"""

from __future__ import annotations

from functools import lru_cache

from user_agents import parse as parse_user_agent

PARSED_PREFIX = 256  # enough for every real browser's agent; the parser's cost is bounded


@lru_cache(maxsize=256)
def describe(user_agent: str) -> str:
    """'Firefox 128 on Ubuntu' from a User-Agent header."""
    if not user_agent:
        return "Unknown device"
    agent = parse_user_agent(user_agent[:PARSED_PREFIX])
    major = agent.browser.version[0] if agent.browser.version else ""
    browser = f"{agent.browser.family} {major}".strip()
    system = f"{agent.os.family} {agent.os.version_string}".strip()
    if agent.browser.family == "Other":
        return user_agent[:60]
    return f"{browser} on {system}" if agent.os.family != "Other" else browser


def label(device: str, user_agent: str) -> str:
    """What to show for a stored row: its device name, or (for rows written before names
    were stored) the start of its raw agent; never a parse while a page renders."""
    return device or user_agent[:60] or "Unknown device"
