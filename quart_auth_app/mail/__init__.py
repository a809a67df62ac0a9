"""Mail (SPEC §11): messages rendered from templates, delivered by SMTP or to .eml files."""

from __future__ import annotations

from .messages import SUBJECTS, build_message
from .transport import FileTransport, MailError, SMTPTransport, Transport, transport_from_config

__all__ = [
    "SUBJECTS",
    "FileTransport",
    "MailError",
    "SMTPTransport",
    "Transport",
    "build_message",
    "transport_from_config",
]
