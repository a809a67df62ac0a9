"""The JSON API (SPEC §4): same cookie, same sessions, same domain functions as the pages."""

from . import account, passkeys, sessions, two_step
from .base import bp

__all__ = ["account", "bp", "passkeys", "sessions", "two_step"]
