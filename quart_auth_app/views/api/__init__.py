"""The JSON API (SPEC §4): same cookie, same sessions, same domain functions as the pages."""

from . import account, sessions
from .base import bp

__all__ = ["account", "bp", "sessions"]
