"""Operations (SPEC §13): the Prometheus metrics, `GET /metrics`, and `GET /readyz`.

Counts live in `prometheus_client` objects. Under the launcher (`serve.py`) each worker
writes them to files in a private directory (`PROMETHEUS_MULTIPROC_DIR`, set before this
module is imported in the worker) and a scrape of any worker sums every worker's files;
without it (tests, `quart run`) a scrape shows this process's counts alone. That is why
they are module-level objects, the library's idiom: every process's counts end up in
one scrape instead of diverging (STYLE, "module-level state").
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from quart import Blueprint, Request, Response, current_app, jsonify, request
from quart_schema import hide

from .errors import from_status
from .requestpath import on_response
from .services import services
from .store import StoreUnavailable

if TYPE_CHECKING:
    from quart import Quart

T = TypeVar("T")
SignIn = Literal["ok", "failed", "throttled", "second_factor"]

MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
DRAINING = "auth_draining"  # app.extensions key: set once SIGTERM has begun the drain
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A proxy in front (even one on loopback) says whom it forwards: such a request is not local.
FORWARDING = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

REGISTRY = CollectorRegistry()  # this process's counts (what a single-process scrape shows)
REQUESTS = Counter(
    "quart_auth_app_requests",
    "HTTP requests answered, by route (the URL rule), method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "quart_auth_app_request_duration_seconds",
    "Time from the request's arrival in the app to its response, by route and method.",
    ["route", "method"],
    registry=REGISTRY,
)
SIGN_INS = Counter(
    "quart_auth_app_sign_ins",
    "Sign-in attempts by outcome: ok, failed, throttled, second_factor (password right, "
    "code asked for).",
    ["outcome"],
    registry=REGISTRY,
)
SIGN_UPS = Counter("quart_auth_app_sign_ups", "Accounts created.", registry=REGISTRY)
BCRYPT_QUEUE = Gauge(
    "quart_auth_app_bcrypt_queue_depth",
    "bcrypt runs waiting for a thread of the pool.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
BCRYPT_WAIT = Histogram(
    "quart_auth_app_bcrypt_wait_seconds",
    "Time a bcrypt run waited for a thread of the pool.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
MAIL_FAILURES = Counter(
    "quart_auth_app_mail_failures",
    "Failed mail deliveries (retried or given up).",
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "quart_auth_app_store_errors",
    "Times the database could not be reached or did not answer in time.",
    registry=REGISTRY,
)

bp = Blueprint("operations", __name__)
# (route, method, status) -> the counter and histogram children it updates: looked up once.
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


class TimedRequest(Request):
    """Quart's request, stamped when it is made (before the session is read)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.perf_counter()


def observe(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency (a dict look-up, an inc, an observe)."""
    key = (route, method, status)
    children = _children.get(key)
    if children is None:
        children = (REQUESTS.labels(route, method, str(status)), LATENCY.labels(route, method))
        _children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def count_request(answered: Request, response: Response) -> None:
    """Count and time a request as its response goes out (a step of `on_response`)."""
    rule = answered.url_rule
    method = answered.method
    started = getattr(answered, "started", None)
    observe(
        rule.rule if rule is not None else "unmatched",
        method if method in METHODS else "OTHER",
        response.status_code,
        time.perf_counter() - started if started is not None else 0.0,
    )


def sign_in(outcome: SignIn) -> None:
    """Count a sign-in attempt's outcome where it is decided."""
    SIGN_INS.labels(outcome).inc()


def sign_in_throttled(is_sign_in: bool) -> None:
    """Count a throttle's 429 among sign-in outcomes when it refused a password or a code."""
    if is_sign_in:
        SIGN_INS.labels("throttled").inc()


def sign_up() -> None:
    SIGN_UPS.inc()


def mail_failed() -> None:
    MAIL_FAILURES.inc()


def store_error() -> None:
    STORE_ERRORS.inc()


async def run_queued(pool: Executor, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in `pool`, counted in the bcrypt queue until a thread takes it up."""
    submitted = time.perf_counter()

    def timed() -> T:
        BCRYPT_WAIT.observe(time.perf_counter() - submitted)
        BCRYPT_QUEUE.dec()
        return fn(*args)

    BCRYPT_QUEUE.inc()
    try:
        future = pool.submit(timed)
    except BaseException:
        BCRYPT_QUEUE.dec()
        raise
    try:
        return await asyncio.wrap_future(future)
    finally:
        # True only if `timed` never started (its caller gave up, or the pool shut down):
        # then it leaves the queue here; once started, it left the queue itself.
        if future.cancel():
            BCRYPT_QUEUE.dec()


def begin_draining(app: Quart) -> None:
    """From now on this process is draining: /readyz answers 503 (SIGTERM, `serve.py`)."""
    app.extensions[DRAINING] = True


def is_local() -> bool:
    """Whether the request came straight from this host: a loopback socket address and no
    proxy's forwarding header. With TRUSTED_PROXY_HOPS the address is the one a proxy
    reported, but a proxy on loopback that forwards too few hops leaves the socket's
    127.0.0.1 in place, so a forwarding header alone makes a request not local."""
    if any(name in request.headers for name in FORWARDING):
        return False
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _refuse_unless_allowed() -> Response | None:
    """None for a local request or the right bearer token; else 404 (no token configured:
    the endpoint does not exist for others) or 401."""
    token = str(current_app.config.get("METRICS_TOKEN") or "")
    if token:
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, f"Bearer {token}".encode()):
            return None
    if is_local():
        return None
    if not token:
        raise from_status(404)
    return Response(
        "A bearer token is required.\n",
        401,
        {"WWW-Authenticate": 'Bearer realm="metrics"', "Content-Type": "text/plain"},
    )


class _Snapshot:
    """Metric families read at scrape time, from the shared database rather than a process."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def exposition(outbox_due: int | None) -> bytes:
    """Every worker's counts (or this process's), then what the database says now."""
    if MULTIPROCESS_DIR:
        counts = CollectorRegistry()
        multiprocess.MultiProcessCollector(counts, MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    else:
        counts = REGISTRY
    now = CollectorRegistry()
    if outbox_due is not None:
        due = GaugeMetricFamily(
            "quart_auth_app_mail_outbox_due", "Messages in the outbox due for delivery now."
        )
        due.add_metric([], outbox_due)
        now.register(_Snapshot([due]))
    return generate_latest(counts) + generate_latest(now)


@bp.get("/metrics")
@hide
async def metrics() -> Response:
    refused = _refuse_unless_allowed()
    if refused is not None:
        return refused
    try:
        due: int | None = await services().store.count_mail_due()
    except StoreUnavailable:
        store_error()
        due = None
    body = await asyncio.to_thread(exposition, due)  # reads the workers' files
    return Response(body, 200, {"Content-Type": CONTENT_TYPE_LATEST})


@bp.get("/readyz")
@hide
async def readyz() -> tuple[Response, int]:
    """Ready when the database answers with every migration of this code applied; 503 once
    the process drains (a load balancer stops sending) or while the database is away."""
    if current_app.extensions.get(DRAINING):
        return jsonify({"status": "draining"}), 503
    try:
        current, newest = await services().store.schema_version()
    except StoreUnavailable:
        return jsonify({"status": "unavailable"}), 503
    if current < newest:
        return jsonify({"status": "schema_outdated"}), 503
    return jsonify({"status": "ready"}), 200


def init_metrics(app: Quart) -> None:
    """Time and count every request, count store errors, and serve /metrics and /readyz.

    Call it after the error handlers are registered: it wraps the StoreUnavailable one.
    """
    app.request_class = TimedRequest
    app.register_blueprint(bp)

    on_response(app, count_request)

    handler = app.error_handler_spec[None][None].get(StoreUnavailable)
    if handler is not None:

        async def counted(error: StoreUnavailable) -> Any:
            store_error()
            return await app.ensure_async(handler)(error)

        app.register_error_handler(StoreUnavailable, counted)
