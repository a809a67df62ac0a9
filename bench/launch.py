"""python -m bench.launch [Hypercorn options] APP: a hello served the way the app's launcher
serves the app.

The launcher (`quart_auth_app.serve`) changes two things about Hypercorn that are not part of
any request path: each worker listens on sockets of its own, so connections spread evenly
over the workers, and the access log formats only the atoms its format reads. The hellos get
both (`bench/hello.py` sets the access logger in each worker), so a ratio against them
measures the app's own machinery and nothing else.
"""

from __future__ import annotations

import sys

import hypercorn.run
from hypercorn.__main__ import main

from quart_auth_app.serve import own_sockets, patched

if __name__ == "__main__":
    master = hypercorn.run
    with patched(master, _populate=own_sockets(master._populate)):
        sys.exit(main(sys.argv[1:]))
