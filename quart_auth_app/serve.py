"""Serve the app with Hypercorn, exiting non-zero when a worker fails (SPEC §8).

`python -m quart_auth_app.serve --config hypercorn.toml [hypercorn options]` is
`hypercorn ... "quart_auth_app:create_app()"` with two fixes. First, when a worker
exits with an error (one that could not open its database, say), Hypercorn 0.18's
master stops every worker, as it should, but then returns 0: its last `_join_exited`
runs on the workers it has just asked to stop and overwrites the failure
(pgjones/hypercorn#269). A supervisor then sees a clean stop and a deployment
script carries on with a server that never served. Here the first failure is
remembered and becomes the exit status. Second, the access log leaves out the token
of a mailed link (`RedactingLogger`, SPEC §13). It also raises the open-file limit
(`raise_open_file_limit`).
"""

from __future__ import annotations

import logging
import re
import resource
import sys
from multiprocessing.process import BaseProcess
from typing import Any

import hypercorn.run
from hypercorn.__main__ import main as hypercorn_main
from hypercorn.config import Config
from hypercorn.logging import Logger

from . import create_app

# The workers load the app from here, so this module's logger setting reaches them too.
APP = "quart_auth_app.serve:create_app()"
OPEN_FILES_WITHOUT_HARD_LIMIT = 65536

log = logging.getLogger(__name__)
__all__ = ["RedactingLogger", "create_app", "main"]
# Paths whose last segment is a mailed link's token (SPEC §11): never written to a log (§13).
LINK_TOKEN = re.compile(r"^(/password/reset/|/email/verify/|/email/change/)[^/?\s]+")


class RedactingLogger(Logger):
    """Hypercorn's logger, with the token of a mailed link left out of the access log."""

    def atoms(self, request: Any, response: Any, request_time: float) -> Any:
        atoms = dict(super().atoms(request, response, request_time))
        for key in ("r", "R", "U", "Uq"):  # "GET /path HTTP/1.1" and the bare path
            if key in atoms:
                parts = atoms[key].split(" ")
                atoms[key] = " ".join(LINK_TOKEN.sub(r"\1[token]", part) for part in parts)
        return atoms


# Each worker is a fresh process that builds its logger from the configuration after it
# loads the app, that is after importing this module (APP above).
Config.logger_class = RedactingLogger


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the limit.

    Every connection holds a descriptor. With the common soft limit of 1,024, a few
    thousand idle or slow clients (each may hold its connection for the 75 s keep-alive)
    exhausted it and the server refused everyone, /healthz included. The workers inherit
    the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_WITHOUT_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def main(argv: list[str] | None = None) -> int:
    """Run Hypercorn on this app with `argv` (Hypercorn's options); return its exit status."""
    raise_open_file_limit()
    failures: list[int] = []
    join_exited = hypercorn.run._join_exited

    def remembering(processes: list[BaseProcess]) -> int:
        status = join_exited(processes)
        if status != 0:
            failures.append(status)
        return status

    hypercorn.run._join_exited = remembering
    try:
        status = hypercorn_main([*(sys.argv[1:] if argv is None else argv), APP])
    finally:
        hypercorn.run._join_exited = join_exited
    if status == 0 and failures:
        logging.basicConfig(format="%(message)s")
        log.critical("a worker exited with status %s, so the server stopped", failures[0])
        return failures[0] if failures[0] > 0 else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
