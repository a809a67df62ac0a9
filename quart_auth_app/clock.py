"""The app's notion of now: the wall clock, or the test kit's clock when one is set.

Every decision about expiry (sessions' timeouts, throttle windows, links, TOTP steps) reads
`now()`, so a test moves time with `app.extensions["auth_clock"]` instead of sleeping.
Deadlines measured with `time.monotonic()` are about this process's waits, not the app's
calendar, and stay on the monotonic clock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from quart import current_app, has_app_context

if TYPE_CHECKING:
    from quart import Quart


def now(app: Quart | None = None) -> float:
    """Seconds since the epoch for `app` (by default the current one, if any)."""
    if app is None:
        if not has_app_context():
            return time.time()
        app = current_app
    clock = app.extensions.get("auth_clock")
    return time.time() if clock is None else float(clock())
