"""Everything the operator dashboard shows, gathered concurrently, each section on its own.

A section is its value or ``Unavailable(reason)``: a dead backend, a slow one, an answer that
breaks the contract or a bug in one section takes that section (or that backend's row) down
and nothing else; the page is always served. Every outside call has the ``admin_probe_timeout``
deadline, so the whole page waits at most about that long whatever is down.

Where the numbers come from, per deployment mode:

- **monolith**: the services are in this process, so readiness is the app's own ready checks,
  the loaded model is the box's, metrics are this process's exposition.
- **microservices**: each backend URL (every subscription and recommender replica) is probed
  over HTTP for ``/healthz`` and ``/readyz``, each recommender replica for ``/v1/model`` and
  ``/metrics`` (its caches and the batch queue live there); the published versions and the
  experiment come through the recommender client, as the pages' calls do.

Probes use a plain aiohttp client of their own, not the pages' ``BackendClient``: a backend
that is down must show as down here without the probes counting against the breakers (or the
retry budget) that protect the pages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
import msgspec
from aiohttp import web

from recommender.schemas import ModelInfo, ModelList
from services.feedback.schemas import ExperimentReport
from services.platform.app import READY_CHECKS, SETTINGS, exposition
from services.platform.schemas import Readiness
from services.platform.settings import Settings
from web_server.admin_metrics import (
    QUEUE_DEPTH,
    CacheRatio,
    RouteLatency,
    Sample,
    cache_ratios,
    gauge,
    route_latencies,
    samples,
)
from web_server.clients import BackendError, BackendRejected
from web_server.state import CLIENTS

log = logging.getLogger("marquee.admin")

T = TypeVar("T")
IN_PROCESS = "in-process"
SERVICE_OF_CHECK = {"model": "recommender"}  # a monolith ready check's service
MAX_BODY = 4 << 20  # bytes of a probed answer read at most (a /metrics page is ~100 kB)

PROBES = web.AppKey("admin_probes", aiohttp.ClientSession)


@dataclass(frozen=True)
class Unavailable:
    """A section (or a row) that could not be had, and why."""

    reason: str


@dataclass(frozen=True)
class Target:
    service: str
    url: str


@dataclass(frozen=True)
class BackendHealth:
    service: str
    where: str  # a base URL, or "in-process"
    live: bool  # /healthz answered 200
    ready: bool | None  # /readyz said ready; None: not known (not live)
    checks: dict[str, bool]
    detail: str  # why not live or not ready, for the operator


@dataclass(frozen=True)
class LoadedModel:
    where: str
    version: str | None  # None: nothing loaded there, or that replica could not be asked
    loaded_at: str | None
    detail: str


@dataclass(frozen=True)
class SourceDown:
    """A metrics source (a replica's /metrics) that could not be read."""

    source: str
    reason: str


@dataclass(frozen=True)
class Scrape:
    source: str
    samples: list[Sample]


@dataclass(frozen=True)
class Scrapes:
    """This process's samples, and each remote source's (or why it could not be read)."""

    own_source: str
    own: list[Sample]
    remote: list[Scrape | SourceDown]


@dataclass(frozen=True)
class Dashboard:
    mode: str
    generated: str  # ISO 8601, UTC
    health: list[BackendHealth] | Unavailable
    published: ModelList | Unavailable
    loaded: list[LoadedModel] | Unavailable
    experiment: ExperimentReport | None | Unavailable  # None: no experiment runs
    routes: list[RouteLatency] | Unavailable
    caches: list[CacheRatio | SourceDown] | Unavailable
    queue_depth: float | None | Unavailable  # None: no batch queue here


# ---- the probe client ------------------------------------------------------------------------
async def admin_probes_ctx(app: web.Application) -> AsyncIterator[None]:
    """The probes' HTTP client (microservices only), closed on shutdown."""
    if app[SETTINGS].mode == "microservices":
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=app[SETTINGS].admin_probe_timeout)
        ) as probes:
            app[PROBES] = probes
            yield
    else:
        yield


def targets(settings: Settings) -> list[Target]:
    """Every backend endpoint the web server is configured with, replicas one by one."""
    found = [Target("catalog", settings.catalog_url.rstrip("/"))]
    found += [
        Target("subscription", url.strip().rstrip("/"))
        for url in settings.subscription_url.split(",")
        if url.strip()
    ]
    found += [Target("recommender", url.rstrip("/")) for url in settings.recommender_urls]
    return found


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return f"cannot connect ({type(exc).__name__})"
    if isinstance(exc, (BackendError, BackendRejected)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:200]


async def _fetch(probes: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with probes.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.content.read(MAX_BODY)


async def probe(probes: aiohttp.ClientSession, target: Target) -> BackendHealth:
    """``/healthz`` and ``/readyz`` of one endpoint, at once."""
    health, ready = await asyncio.gather(
        _fetch(probes, f"{target.url}/healthz"),
        _fetch(probes, f"{target.url}/readyz"),
        return_exceptions=True,
    )
    if isinstance(health, BaseException):
        return BackendHealth(target.service, target.url, False, None, {}, _why(health))
    if health[0] != 200:
        return BackendHealth(
            target.service, target.url, False, None, {}, f"/healthz answered {health[0]}"
        )
    if isinstance(ready, BaseException):
        return BackendHealth(target.service, target.url, True, None, {}, _why(ready))
    try:
        readiness = msgspec.json.decode(ready[1], type=Readiness)
    except msgspec.MsgspecError:
        return BackendHealth(
            target.service, target.url, True, False, {}, f"/readyz answered {ready[0]}"
        )
    is_ready = ready[0] == 200 and readiness.status == "ready"
    waiting = ", ".join(name for name, ok in readiness.checks.items() if not ok)
    detail = "" if is_ready else f"not ready: {waiting or readiness.status}"
    return BackendHealth(target.service, target.url, True, is_ready, readiness.checks, detail)


# ---- sections --------------------------------------------------------------------------------
def own_health(app: web.Application, *, only_web: bool) -> list[BackendHealth]:
    """This process's ready checks: one row per service it hosts."""
    rows = []
    for name, check in app[READY_CHECKS].items():
        service = SERVICE_OF_CHECK.get(name, name)
        if only_web and service != "web":
            continue
        try:
            ok = bool(check())
        except Exception as exc:  # noqa: BLE001 - a broken check is a not-ready service here
            rows.append(BackendHealth(service, IN_PROCESS, True, False, {name: False}, _why(exc)))
            continue
        detail = "" if ok else f"not ready: {name}"
        rows.append(BackendHealth(service, IN_PROCESS, True, ok, {name: ok}, detail))
    return rows


async def health(app: web.Application) -> list[BackendHealth]:
    settings = app[SETTINGS]
    if settings.mode != "microservices":
        return own_health(app, only_web=False)
    probes = app[PROBES]
    remote = await asyncio.gather(*(probe(probes, t) for t in targets(settings)))
    return [*own_health(app, only_web=True), *remote]


async def loaded_models(app: web.Application) -> list[LoadedModel]:
    """The version each recommender replica serves (the one box, in a monolith)."""
    settings = app[SETTINGS]
    if settings.mode != "microservices":
        try:
            info = await app[CLIENTS].recommender.model(timeout=settings.admin_probe_timeout)
        except BackendError as exc:
            return [LoadedModel(IN_PROCESS, None, None, _why(exc))]
        return [LoadedModel(IN_PROCESS, info.version, info.loaded_at, "")]

    async def one(url: str) -> LoadedModel:
        try:
            status, body = await _fetch(app[PROBES], f"{url}/v1/model")
            if status != 200:
                return LoadedModel(url, None, None, f"/v1/model answered {status}")
            info = msgspec.json.decode(body, type=ModelInfo)
        except Exception as exc:  # noqa: BLE001 - shown as this row's reason
            return LoadedModel(url, None, None, _why(exc))
        return LoadedModel(url, info.version, info.loaded_at, "")

    urls = [t.url for t in targets(settings) if t.service == "recommender"]
    return list(await asyncio.gather(*(one(url) for url in urls)))


async def scrape(app: web.Application) -> Scrapes:
    """This process's samples, and in microservices each recommender replica's."""
    settings = app[SETTINGS]
    own = samples((await exposition(app)).decode("utf-8", "replace"))
    if settings.mode != "microservices":
        return Scrapes(IN_PROCESS, own, [])

    async def one(url: str) -> Scrape | SourceDown:
        source = f"recommender {url}"
        try:
            status, body = await _fetch(app[PROBES], f"{url}/metrics")
            if status != 200:
                return SourceDown(source, f"/metrics answered {status}")
            return Scrape(source, samples(body.decode("utf-8", "replace")))
        except Exception as exc:  # noqa: BLE001 - shown as this source's reason
            return SourceDown(source, _why(exc))

    urls = [t.url for t in targets(settings) if t.service == "recommender"]
    return Scrapes("web", own, list(await asyncio.gather(*(one(url) for url in urls))))


def caches_of(scrapes: Scrapes) -> list[CacheRatio | SourceDown]:
    rows: list[CacheRatio | SourceDown] = [*cache_ratios(scrapes.own, scrapes.own_source)]
    for remote in scrapes.remote:
        if isinstance(remote, SourceDown):
            rows.append(remote)
        else:
            rows += cache_ratios(remote.samples, remote.source)
    return rows


def queue_depth_of(scrapes: Scrapes) -> float | None:
    """The batch queue's depth. It lives with the recommenders: with remote ones, theirs (one
    Redis stream, so any replica's reading will do), else this process's."""
    if not scrapes.remote:
        return gauge(scrapes.own, QUEUE_DEPTH)
    readings = [gauge(r.samples, QUEUE_DEPTH) for r in scrapes.remote if isinstance(r, Scrape)]
    known = [r for r in readings if r is not None]
    if known:
        return max(known)
    if any(isinstance(r, SourceDown) for r in scrapes.remote):
        raise LookupError("no recommender's metrics could be read")
    return None


def routes_of(scrapes: Scrapes) -> list[RouteLatency]:
    return route_latencies(scrapes.own)


# ---- the whole page --------------------------------------------------------------------------
async def _section(work: Awaitable[T], deadline: float, what: str) -> T | Unavailable:
    try:
        async with asyncio.timeout(deadline):
            return await work
    except Exception as exc:  # noqa: BLE001 - one section down, the page still served
        if not isinstance(exc, (TimeoutError, BackendError, BackendRejected)):
            log.warning("dashboard section failed", extra={"section": what, "error": repr(exc)})
        return Unavailable(_why(exc))


def _derived(scrapes: Scrapes | Unavailable, pick: Callable[[Scrapes], T]) -> T | Unavailable:
    if isinstance(scrapes, Unavailable):
        return scrapes
    try:
        return pick(scrapes)
    except Exception as exc:  # noqa: BLE001 - one section down, the page still served
        return Unavailable(_why(exc))


async def gather(app: web.Application) -> Dashboard:
    """Every section at once; each is its value or why it is unavailable."""
    settings = app[SETTINGS]
    recommender = app[CLIENTS].recommender
    timeout = settings.admin_probe_timeout
    deadline = timeout * 2 + 0.5  # a section's probes run at once, each within ``timeout``
    health_, published, loaded, experiment, scrapes = await asyncio.gather(
        _section(health(app), deadline, "health"),
        _section(recommender.models(timeout=timeout), deadline, "published"),
        _section(loaded_models(app), deadline, "loaded"),
        _section(recommender.experiment_report(timeout=timeout), deadline, "experiment"),
        _section(scrape(app), deadline, "metrics"),
    )
    return Dashboard(
        mode=settings.mode,
        generated=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        health=health_,
        published=published,
        loaded=loaded,
        experiment=experiment,
        routes=_derived(scrapes, routes_of),
        caches=_derived(scrapes, caches_of),
        queue_depth=_derived(scrapes, queue_depth_of),
    )
