"""Template helpers: the signed-in user in every page, readable devices and times."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape
from user_agents import parse as parse_user_agent

from .auth import current_user

if TYPE_CHECKING:
    from quart import Quart

UNITS = [(86400, "day"), (3600, "hour"), (60, "minute")]


@lru_cache(maxsize=256)
def device(user_agent: str) -> str:
    """'Firefox 128 on Ubuntu' from a User-Agent header."""
    if not user_agent:
        return "Unknown device"
    agent = parse_user_agent(user_agent)
    major = agent.browser.version[0] if agent.browser.version else ""
    browser = f"{agent.browser.family} {major}".strip()
    system = f"{agent.os.family} {agent.os.version_string}".strip()
    if agent.browser.family == "Other":
        return user_agent[:60]
    return f"{browser} on {system}" if agent.os.family != "Other" else browser


def ago(timestamp: float, now: float | None = None) -> str:
    """'5 minutes ago' for a past timestamp."""
    seconds = max(0, int((now or time.time()) - timestamp))
    for size, unit in UNITS:
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def duration(seconds: float) -> str:
    """'15 minutes' for 900: the largest whole unit, rounded up so nobody comes back early."""
    seconds = max(1, math.ceil(seconds))
    for size, unit in UNITS:
        if seconds >= size:
            count = math.ceil(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def when(timestamp: float) -> Markup:
    """A relative time with the exact UTC time on hover."""
    exact = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        exact, exact, escape(ago(timestamp))
    )


def init_templating(app: Quart) -> None:
    """Register the filters and put `current_user` into every template."""
    app.jinja_env.filters["device"] = device
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["duration"] = duration

    @app.context_processor
    async def inject_user() -> dict[str, Any]:
        return {"current_user": current_user()}
