"""The base every service app is built on: middleware, settings, and the system routes
(`/healthz`, `/readyz`, `/metrics`, `/openapi.json`).

A service adds itself to an app with its own ``setup_<service>(app)``; the monolith calls several
of them on one app, a microservice calls one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.platform.jsonutil import json_response, raw_json_response
from services.platform.logs import access_log
from services.platform.metrics import Metrics
from services.platform.middleware import (
    ACCESS_LOG,
    GATE,
    METRICS,
    REQUEST_IDS,
    UNMATCHED,
    Gate,
    Handler,
    observe,
    observed,
    request_ids,
    unmatched,
)
from services.platform.openapi import document, system_paths
from services.platform.schemas import Health, Readiness
from services.platform.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
READY_CHECKS: web.AppKey[dict[str, Callable[[], bool]]] = web.AppKey("ready_checks")
OPENAPI_PATHS: web.AppKey[dict[str, dict]] = web.AppKey("openapi_paths")
SERVICE_NAME = web.AppKey("service_name", str)
METRICS_REFRESHERS: web.AppKey[list[Callable[[], Awaitable[None]]]] = web.AppKey(
    "metrics_refreshers"
)
REFRESH_TIMEOUT = 0.5

log = logging.getLogger("marquee.metrics")


OBSERVED_IN_ROUTES = web.AppKey("observed_in_routes", bool)


def create_base_app(
    settings: Settings, service: str, *, own_middlewares: bool = False
) -> web.Application:
    """A service's app. ``own_middlewares``: the app will add middlewares of its own (the web
    server), so requests are observed by the ``observe`` middleware, outermost; otherwise each
    route observes its requests (``add_route``), and a catch-all route answers the rest."""
    middlewares = [observe] if own_middlewares else []
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[OBSERVED_IN_ROUTES] = not own_middlewares
    app[SETTINGS] = settings
    app[SERVICE_NAME] = service
    app[METRICS] = Metrics(service)
    app[ACCESS_LOG] = access_log(service, settings)
    app[REQUEST_IDS] = request_ids()
    app[GATE] = Gate(settings.max_inflight)
    app[READY_CHECKS] = {}
    app[OPENAPI_PATHS] = {}
    app[METRICS_REFRESHERS] = []
    add_route(app, "GET", "/healthz", healthz)
    add_route(app, "GET", "/readyz", readyz)
    add_route(app, "GET", "/metrics", metrics)
    add_route(app, "GET", "/openapi.json", openapi)
    if not own_middlewares:  # tried last whatever the order: it is the only route under "/"
        catch_all = observed(unmatched, UNMATCHED, app)
        app.router.add_route("*", "/{tail:.*}", catch_all, name=UNMATCHED)
    return app


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Serve ``method`` ``path`` with ``handler`` (a GET serves HEAD too), observed."""
    if app[OBSERVED_IN_ROUTES]:
        handler = observed(handler, path, app)
    if method == "GET":
        app.router.add_get(path, handler)
    else:
        app.router.add_route(method, path, handler)


_REMEMBERED = web.RequestKey("remembered", bytes)


def answer_before_routing(
    app: web.Application, route: str, remembered: Callable[[str], bytes | None]
) -> bool:
    """Answer a GET whose request target (path and query as sent) ``remembered`` knows with
    those JSON bytes before aiohttp routes it, observed as ``route``'s requests are.

    For answers a route keeps by target (the recommender's memo): the router is frozen once the
    app starts, so a target the route answered before would reach it again, and resolving it
    (the path's pattern, match info, the handler chain) costs more CPU than a cache hit's own
    work (docs/performance.md). aiohttp has no public hook ahead of routing; this wraps the
    entry point its server calls per request, ``Application._handle`` (aiohttp is pinned, and
    tests/platform/test_answer_before_routing.py fails should that call change). An app with
    middlewares of its own (the monolith's web server) keeps routing every request: they must
    see them all. Returns whether requests are answered so (else a route need not remember by
    target).
    """
    if not app[OBSERVED_IN_ROUTES]:
        return False
    answer = observed(_remembered_answer, route, app)
    routed = app._handle

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            body = remembered(request.raw_path)
            if body is not None:
                request[_REMEMBERED] = body
                return await answer(request)
        return await routed(request)

    app._handle = handle  # type: ignore[method-assign]
    return True


async def _remembered_answer(request: web.Request) -> web.Response:
    return raw_json_response(request[_REMEMBERED])


def add_ready_check(app: web.Application, name: str, check: Callable[[], bool]) -> None:
    app[READY_CHECKS][name] = check


def add_metrics_refresher(app: web.Application, refresh: Callable[[], Awaitable[None]]) -> None:
    """Run ``refresh`` before each scrape: for a gauge whose truth lives elsewhere (the batch
    queue's depth in Redis, drained by worker processes that serve no /metrics of their own)."""
    app[METRICS_REFRESHERS].append(refresh)


def add_openapi_paths(app: web.Application, paths: dict) -> None:
    app[OPENAPI_PATHS].update(paths)


async def healthz(request: web.Request) -> web.Response:
    return json_response(Health("ok", request.app[SERVICE_NAME]))


async def readyz(request: web.Request) -> web.Response:
    checks = {name: bool(check()) for name, check in request.app[READY_CHECKS].items()}
    ready = all(checks.values())
    body = Readiness("ready" if ready else "not_ready", checks)
    return json_response(body, status=200 if ready else 503)


async def exposition(app: web.Application) -> bytes:
    """What a scrape of this app sees (its refreshed gauges included): also what the operator
    dashboard reads in-process."""
    for refresh in app[METRICS_REFRESHERS]:
        try:  # a scrape never fails or hangs for one stale gauge
            async with asyncio.timeout(REFRESH_TIMEOUT):
                await refresh()
        except Exception as exc:  # noqa: BLE001 - logged; the other metrics are still served
            log.warning("metrics refresh failed", extra={"error": repr(exc)})
    return app[METRICS].exposition()


async def metrics(request: web.Request) -> web.Response:
    body = await exposition(request.app)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app))


def openapi_document(app: web.Application) -> dict:
    paths = system_paths()
    served: dict[str, dict] = app[OPENAPI_PATHS]
    paths.update(served)
    return document(f"Marquee {app[SERVICE_NAME]}", paths)
