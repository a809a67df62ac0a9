"""The app's services, typed: the one module that knows where they live on the app.

They are also reachable as `app.extensions["auth_store"]`, `["auth_hasher"]`,
`["auth_throttle"]` and `["auth_touches"]`, the names tests and apps built on this one
use; inside the package, `services(app)` gives them typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from quart import current_app

if TYPE_CHECKING:
    from quart import Quart

    from .mail.sender import Sender
    from .passwords import Hasher
    from .store import Store
    from .throttle import Throttle
    from .touches import Touches


@dataclass(frozen=True)
class Services:
    store: Store
    hasher: Hasher
    throttle: Throttle
    touches: Touches
    mailer: Sender


def install(app: Quart, found: Services) -> None:
    """Attach the services to `app`."""
    app.extensions["auth_services"] = found
    app.extensions["auth_store"] = found.store
    app.extensions["auth_hasher"] = found.hasher
    app.extensions["auth_throttle"] = found.throttle
    app.extensions["auth_touches"] = found.touches


def services(app: Quart | None = None) -> Services:
    """The services of `app` (by default the current one)."""
    return cast(Services, (app or current_app).extensions["auth_services"])
