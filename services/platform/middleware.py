"""Middleware shared by every service: request ids, access logs, metrics, errors as JSON."""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeGuard

from aiohttp import web

from services.platform.errors import ApiError, PayloadTooLarge
from services.platform.jsonutil import json_response
from services.platform.logs import AccessLog, request_id_var
from services.platform.metrics import Metrics

REQUEST_ID = "X-Request-ID"
METRICS = web.AppKey("metrics", Metrics)
ACCESS_LOG: web.AppKey[AccessLog | None] = web.AppKey("access_log")


class RequestIds:
    """Unique request ids: a random per-process prefix and a counter (uuid4 per request costs
    more than the rest of this middleware)."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


REQUEST_IDS = web.AppKey("request_ids", RequestIds)
_CLIENT_GONE = web.RequestKey("client_gone", bool)
CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection first"


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
    return resource.canonical if resource is not None else "unmatched"


def _valid_request_id(value: str | None) -> TypeGuard[str]:
    return bool(value) and len(value) <= 128 and value.isascii() and value.isprintable()  # type: ignore[union-attr, arg-type]


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id, answer errors as JSON, and count and log it."""
    app = request.app
    incoming = request.headers.get(REQUEST_ID)
    request_id = incoming if _valid_request_id(incoming) else app[REQUEST_IDS].next()
    token = request_id_var.set(request_id)
    response: web.StreamResponse | None = None  # None if the handler was cancelled: a 500
    started = time.perf_counter()
    gate = app[GATE]
    admitted = gate.inflight < gate.limit or request.path in Gate.EXEMPT
    if admitted:
        gate.inflight += 1
    try:
        try:
            if not admitted:
                gate.shed += 1
                app[METRICS].shed.inc()
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
        if not response.prepared:
            response.headers[REQUEST_ID] = request_id
        return response
    except web.HTTPException as exc:  # redirects
        exc.headers[REQUEST_ID] = request_id
        response = exc
        raise
    finally:
        if admitted:
            gate.inflight -= 1
        elapsed = time.perf_counter() - started
        route = _route_name(request)
        status = CLIENT_CLOSED if request.get(_CLIENT_GONE) else getattr(response, "status", 500)
        app[METRICS].observe_request(route, request.method, status, elapsed)
        access = app[ACCESS_LOG]
        if access is not None:
            access.write(request.method, route, request.path, status, elapsed)
        request_id_var.reset(token)


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
