"""The receiving service's aiohttp application: an app factory, typed ``AppKey`` state, ``cleanup_ctx`` for
the storage and the group committer. The contract is documented in docs/wire-format.md ("HTTP").

Bad input never gets a 5xx: a body refused as a whole gets 400/413/415 with ``{"error", "detail"}``, items
are refused one by one in the 200 answer, an overloaded machine or connection source gets 429 and an
unavailable database 503, both with ``Retry-After``. The sender's address is read only to key the
per-source limiter, which holds a keyed hash of it in memory (``limits.source_key``): it is never stored
or logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from ceip_core.service import metrics, queries
from ceip_core.service.aging import Aging
from ceip_core.service.auth import authorized
from ceip_core.service.config import ServiceConfig
from ceip_core.service.dashboard import Dashboard, add_routes
from ceip_core.service.groupcommit import GroupCommitter
from ceip_core.service.headers import add_security_headers
from ceip_core.service.ingest import Ingest, guids_of
from ceip_core.service.limits import BodyError, RateLimiter, read_batch, source_of
from ceip_core.service.openapi import PATH as OPENAPI_PATH
from ceip_core.service.openapi import openapi
from ceip_core.service.storage import Storage, StorageUnavailable
from ceip_core.service.stores import open_storage

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", ServiceConfig)
TOKEN = web.AppKey("token", str)
STORAGE = web.AppKey("storage", Storage)
INGEST = web.AppKey("ingest", Ingest)
RATE: web.AppKey[RateLimiter[str]] = web.AppKey("rate")
SOURCES: web.AppKey[RateLimiter[bytes]] = web.AppKey("sources")
DASHBOARD = web.AppKey("dashboard", Dashboard)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")

#: Seconds a client should wait when the database is unavailable.
RETRY_UNAVAILABLE_S = 5

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


def _error(status: int, error: str, detail: str, **headers: str) -> web.Response:
    return _json({"error": error, "detail": detail}, status, headers)


def _unavailable(exc: Exception) -> web.Response:
    log.warning("storage unavailable: %s", exc)
    return _error(503, "storage-unavailable", "the database is unavailable; retry later", **_retry(RETRY_UNAVAILABLE_S))


def _retry(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


@web.middleware
async def _guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every request, body upload included, finishes within the request timeout (else 408); a bug is
    logged here, without the sender's address (aiohttp's own error log would name it), and answered 500."""
    timeout = request.app[CONFIG].limits.request_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await handler(request)
    except TimeoutError:
        return _error(408, "timeout", f"the request took longer than {timeout:g} s")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal", "the service failed; this is a bug in the service, not in the request")


# -- machines ---------------------------------------------------------------------------------------


def _source_limited(wait: float) -> web.Response:
    return _error(429, "rate-limited", "too much from this connection's source; retry later", **_retry(wait))


async def _batch(request: web.Request, kind: str) -> web.Response:
    received = time.time()
    limits = request.app[CONFIG].limits
    source = source_of(request)
    sources = request.app[SOURCES]
    if wait := sources.take({source: 1}):  # before the body is read: a flood of requests costs nothing more
        return _source_limited(wait)
    try:
        raw_items = await read_batch(request, limits.max_compressed, limits.max_expanded, limits.max_items)
    except BodyError as exc:
        extra = {} if exc.limit is None else {"limit": exc.limit}
        return _json({"error": exc.reason, "detail": exc.detail, **extra}, exc.status)
    if wait := sources.take({source: len(raw_items)}):
        return _source_limited(wait)
    ingest = request.app[INGEST]
    verdicts = ingest.check(raw_items, kind, received)
    wait = request.app[RATE].take(guids_of(verdicts))
    if wait:
        return _error(429, "rate-limited", "this machine sends too much; retry later", **_retry(wait))
    try:
        results = await ingest.store(raw_items, verdicts, received)
    except StorageUnavailable as exc:
        return _unavailable(exc)
    return _json({"results": results})


async def post_reports(request: web.Request) -> web.Response:
    """``POST /v1/reports``: a gzip batch of ``report`` items; one result per item."""
    return await _batch(request, "report")


async def post_deletions(request: web.Request) -> web.Response:
    """``POST /v1/deletions``: a gzip batch of ``deletion`` items; deletes what is held for each pair."""
    return await _batch(request, "deletion")


async def get_policy(request: web.Request) -> web.Response:
    """``GET /v1/policy``: the kill switch and sample rate per product, which clients honour (and the
    service enforces); as currently configured, reloads included."""
    config = request.app[INGEST].config
    products = {}
    for product in sorted(config.allowlist):
        policy = config.policy_for(product)
        products[product] = {"enabled": policy.enabled, "sample_rate": policy.sample_rate}
    return _json({"products": products})


# -- operators --------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process is up."""
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: the database answers; how many stored reports the fold quarantined; and this
    worker's ingest counters (what was refused and removed, by reason: ``Ingest.counts``)."""
    try:
        quarantined = await request.app[STORAGE].quarantined()
    except StorageUnavailable as exc:
        return _unavailable(exc)
    return _json(
        {"status": "ready", "quarantined": quarantined, "ingest": dict(sorted(request.app[INGEST].counts.items()))}
    )


async def get_openapi(request: web.Request) -> web.Response:
    """``GET /v1/openapi.json``: the OpenAPI description of this API (``ceip_core/service/openapi.py``)."""
    return _json(openapi(request.app[CONFIG].limits))


async def query(request: web.Request) -> web.Response:
    """``GET /v1/query/<name>``: aggregates only, behind the bearer token (or a dashboard session)."""
    token = request.app[TOKEN]
    if not authorized(request.headers.get("Authorization"), token) and not await request.app[DASHBOARD].signed_in(
        request
    ):
        return _error(401, "unauthorized", "send Authorization: Bearer <token>", **{"WWW-Authenticate": "Bearer"})
    run = queries.QUERIES.get(request.match_info["name"])
    if run is None:
        return _error(404, "unknown-query", f"known queries: {', '.join(queries.QUERIES)}")
    try:
        filters = queries.Filters.parse(request.query)
        answer = await run(request.app[STORAGE], filters, request.app[CONFIG].k)
    except queries.QueryError as exc:
        return _error(400, "bad-query", str(exc))
    except StorageUnavailable as exc:
        return _unavailable(exc)
    return _json(answer)


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: database size, rows per table, fold lag and counters, in Prometheus text format."""
    if not authorized(request.headers.get("Authorization"), request.app[TOKEN]):
        return _error(401, "unauthorized", "send Authorization: Bearer <token>", **{"WWW-Authenticate": "Bearer"})
    try:
        found = await metrics.figures(request.app[STORAGE], request.app[CLOCK]())
    except StorageUnavailable as exc:
        return _unavailable(exc)
    return web.Response(body=metrics.prometheus(found), headers={"Content-Type": metrics.CONTENT_TYPE})


# -- the application --------------------------------------------------------------------------------


def make_app(
    config: ServiceConfig, database: str | Storage, token: str, clock: Callable[[], float] = time.time
) -> web.Application:
    """The receiving service as an aiohttp application.

    :param database: a database URL (``sqlite:///...``, ``postgresql://...``) or an opened-or-not storage;
        the application opens it at startup and closes it at cleanup.
    :param token: the query token: the query API's bearer token, and what the dashboard's login page asks for.
    :param clock: what aging and the fold lag read as now (tests move it).
    """
    # Raw bodies: the service inflates them itself, within its limits.
    app = web.Application(middlewares=[_guard], handler_args={"auto_decompress": False})
    app[CONFIG] = config
    app[TOKEN] = token
    app[CLOCK] = clock
    app[STORAGE] = open_storage(database) if isinstance(database, str) else database
    app[RATE] = RateLimiter(config.limits.rate_burst, config.limits.rate_per_s)
    app[SOURCES] = RateLimiter(config.limits.source_burst, config.limits.source_per_s)
    app.cleanup_ctx.append(_storage_ctx)
    app.router.add_post("/v1/reports", post_reports)
    app.router.add_post("/v1/deletions", post_deletions)
    app.router.add_get("/v1/policy", get_policy)
    app.router.add_get("/v1/query/{name}", query)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(OPENAPI_PATH, get_openapi)
    app.router.add_get("/metrics", get_metrics)
    app[DASHBOARD] = Dashboard(app[STORAGE], token, config.k, sorted(config.allowlist))
    add_routes(app, app[DASHBOARD])
    add_security_headers(app)
    return app


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = app[STORAGE]
    await storage.open()
    aging = Aging(storage, app[CONFIG].retention_days, clock=app[CLOCK])
    committer = GroupCommitter(storage, aging=aging)
    committer.start()
    app[INGEST] = Ingest(app[CONFIG], committer)
    try:
        yield
    finally:
        await committer.stop()
        await storage.close()
