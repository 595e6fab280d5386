"""Middleware shared by every service: request ids, access logs, metrics, errors as JSON."""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TypeGuard

from aiohttp import web
from multidict import istr

from services.platform.errors import ApiError, PayloadTooLarge
from services.platform.jsonutil import json_response
from services.platform.logs import AccessLog, request_id_var
from services.platform.metrics import Metrics

REQUEST_ID = istr("X-Request-ID")  # an istr: no case folding per lookup
METRICS = web.AppKey("metrics", Metrics)
ACCESS_LOG: web.AppKey[AccessLog | None] = web.AppKey("access_log")


def request_ids() -> Callable[[], str]:
    """Unique request ids: a random per-process prefix and a counter in hex (16 digits: it starts
    at 2**60), made by C iterators with no Python frame per id (uuid4 per request cost more than
    the rest of this module)."""
    prefix = secrets.token_hex(8)
    return map(prefix.__add__, map("%x".__mod__, itertools.count(1 << 60))).__next__


REQUEST_IDS: web.AppKey[Callable[[], str]] = web.AppKey("request_ids")
_CLIENT_GONE = web.RequestKey("client_gone", bool)
CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection first"
UNMATCHED = "unmatched"  # the route label of requests no route serves (and the catch-all's name)


def client_went_away(request: web.Request) -> bool:
    """Whether the visitor already closed the connection (nobody would read the answer)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def mark_client_gone(request: web.Request) -> None:
    """Count and log this request as a 499: not a failure of ours, and no page was made."""
    request[_CLIENT_GONE] = True


errors_log = logging.getLogger("marquee.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gate:
    """At most ``limit`` requests in progress per process; past it a request is shed at once
    with 503 + Retry-After instead of queueing until it times out (a visitor's retry after a
    second beats a page that never comes, and a shed request costs ~30 µs, not a whole page).
    Probes and scrapes are never shed: an overloaded process is busy, not dead."""

    EXEMPT = frozenset(("/healthz", "/readyz", "/metrics"))

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0
        self.shed = 0


GATE = web.AppKey("gate", Gate)
RETRY_AFTER_SHED = "1"
RETRY_AFTER_UNAVAILABLE = "5"
_SHED_JSON = (
    b'{"error":{"code":"overloaded","message":"too many requests in progress; retry shortly"}}'
)
_SHED_HTML = (
    b"<!doctype html><title>Busy</title><h1>Marquee is very busy</h1>"
    b"<p>Too many people at once: please try again in a moment.</p>"
)


def shed(request: web.Request) -> web.Response:
    html = "text/html" in request.headers.get("Accept", "")
    return web.Response(
        body=_SHED_HTML if html else _SHED_JSON,
        status=503,
        content_type="text/html" if html else "application/json",
        headers={"Retry-After": RETRY_AFTER_SHED},
    )


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def _valid_request_id(value: str | None) -> TypeGuard[str]:
    return bool(value) and len(value) <= 128 and value.isascii() and value.isprintable()  # type: ignore[union-attr, arg-type]


def _client_gone(request: web.Request) -> bool:
    # most requests store nothing, and looking up a missing key raises (and catches) a KeyError
    return len(request) > 0 and request.get(_CLIENT_GONE, False)


def observed(handler: Handler, route: str | None, app: web.Application) -> Handler:
    """``handler`` observed: the request gets an id, errors are answered as JSON, and it is counted
    and logged under ``route`` (None: the matched resource's pattern), by ``app``'s request ids,
    gate, metrics and access log.

    A service app observes inside each route: aiohttp's middleware chain costs ~5 µs a request,
    a tenth of a recommender cache hit. The web server, which has middlewares of its own, runs
    ``observe`` as its outermost middleware. Every step here is paid by every request: the
    recommender's cache hit is held to 0.8x a bare aiohttp handler (``python -m bench``)."""

    next_id, gate, metrics, access = app[REQUEST_IDS], app[GATE], app[METRICS], app[ACCESS_LOG]

    async def observed_handler(request: web.Request) -> web.StreamResponse:
        incoming = request.headers.get(REQUEST_ID)
        request_id = incoming if incoming and _valid_request_id(incoming) else next_id()
        # No reset: aiohttp runs each request in a task of its own, whose context ends with it.
        request_id_var.set(request_id)
        response: web.StreamResponse | None = None  # None if the handler was cancelled: a 500
        streamed = False
        started = perf_counter()
        admitted = gate.inflight < gate.limit or request.path in Gate.EXEMPT
        if admitted:
            gate.inflight += 1
        try:
            try:
                if not admitted:
                    gate.shed += 1
                    metrics.shed.inc()
                    response = shed(request)
                else:
                    response = await handler(request)
            except ApiError as exc:
                response = error_response(exc)
            except web.HTTPRequestEntityTooLarge as exc:
                response = error_response(PayloadTooLarge(exc.text or "request body too large"))
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = http_exception_response(exc)
            except ConnectionError:  # the visitor left while we wrote: not our failure
                mark_client_gone(request)
                response = web.Response(status=CLIENT_CLOSED)
            except Exception:
                errors_log.exception("unhandled error", extra={"path": request.path})
                response = json_response(
                    {"error": {"code": "internal", "message": "internal error"}}, status=500
                )
            if response.prepared:  # streamed by the handler, which may have lost its reader
                streamed = True
            else:
                response.headers[REQUEST_ID] = request_id
            return response
        except web.HTTPException as exc:  # redirects
            exc.headers[REQUEST_ID] = request_id
            response = exc
            raise
        finally:
            if admitted:
                gate.inflight -= 1
            elapsed = perf_counter() - started
            label = _route_name(request) if route is None else route
            if response is None:
                status = 500
            elif streamed and _client_gone(request):
                status = CLIENT_CLOSED
            else:
                status = response.status
            method = request.method
            metrics.observe_request(label, method, status, elapsed)
            if access is not None:
                access.write(request_id, method, label, request, status, elapsed)

    return observed_handler


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``observed`` as a middleware."""
    return await observed(handler, None, request.app)(request)


async def unmatched(request: web.Request) -> web.StreamResponse:
    """The catch-all route of a service app: 405 with ``Allow`` when another route has this
    path, else 404 (aiohttp's own answer when nothing matches, which no route observes)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name != UNMATCHED:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def error_response(exc: ApiError) -> web.Response:
    """The JSON error; a 429 or a 503 says when to come back (Retry-After)."""
    headers = None
    if exc.status in (429, 503):
        headers = {"Retry-After": str(getattr(exc, "retry_after", RETRY_AFTER_UNAVAILABLE))}
    return json_response(exc.to_dict(), status=exc.status, headers=headers)


_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 400: "bad_request"}


def http_exception_response(exc: web.HTTPException) -> web.Response:
    code = _CODES.get(exc.status, "http_error")
    message = exc.reason if exc.status in (404, 405) else (exc.text or exc.reason)
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return json_response(
        {"error": {"code": code, "message": message}}, status=exc.status, headers=headers
    )
