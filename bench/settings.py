"""How big and how long: full mode (about 9 minutes) and --quick (seconds, for the smoke test)."""

from __future__ import annotations

from dataclasses import dataclass

# Target 1 judges the ratio to the Quart hello up to this many connections (errors and the
# slowest request above it).
RATIO_JUDGED_UP_TO = 256


@dataclass(frozen=True)
class Settings:
    rounds: int  # every comparison is repeated, interleaved A B A B
    # Scenarios 1 and 5 (GET /protected against the hellos): more pairs, as the machine's speed
    # moves by a quarter within a minute and target 1 is a ratio judged at 0.80 x.
    browsing_rounds: int
    connections: tuple[int, ...]  # scenario 1
    duration: int  # seconds per /protected run
    page_timeout: int  # scenario 1: wrk counts a request slower than this as a timeout (target)
    users: int  # prepared users (one bcrypt hash shared)
    sessions: int  # live sessions with known tokens (wrk rotates over them)
    large_sessions: int  # scenario 5: stored sessions in the large database
    growth_connections: int
    storm_connections: int  # scenario 2
    storm_duration: int
    signup_connections: int  # scenario 4
    signup_duration: int
    browse_connections: int  # scenario 3: paced browsing
    browse_delay_ms: int
    browse_duration: int
    loaded_connections: int  # scenario 7: /protected saturating the cores...
    loaded_signin_connections: int  # ...while this many sign in (one per bcrypt thread)
    loaded_duration: int
    bcrypt_rounds: int | None  # None: the app's default cost (12)
    wrk_timeout: int  # seconds before wrk counts a request as timed out
    storm_timeout: int  # sign-ins queue for bcrypt: a longer client timeout


FULL = Settings(
    rounds=3,
    browsing_rounds=5,
    connections=(64, 256, 1024),
    duration=6,
    page_timeout=2,
    users=1000,
    sessions=1000,
    large_sessions=1_000_000,
    growth_connections=256,
    storm_connections=64,
    storm_duration=10,
    signup_connections=256,
    signup_duration=10,
    browse_connections=16,
    browse_delay_ms=20,
    browse_duration=6,
    loaded_connections=256,
    loaded_signin_connections=2,
    loaded_duration=10,
    bcrypt_rounds=None,
    wrk_timeout=10,
    storm_timeout=60,
)

QUICK = Settings(
    rounds=1,
    browsing_rounds=1,
    connections=(16,),
    duration=1,
    page_timeout=2,
    users=50,
    sessions=50,
    large_sessions=2000,
    growth_connections=16,
    storm_connections=4,
    storm_duration=2,
    signup_connections=8,
    signup_duration=2,
    browse_connections=4,
    browse_delay_ms=10,
    browse_duration=1,
    loaded_connections=16,
    loaded_signin_connections=2,
    loaded_duration=2,
    bcrypt_rounds=4,
    wrk_timeout=5,
    storm_timeout=10,
)
