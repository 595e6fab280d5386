"""The resilient HTTP client every caller of a Marquee service uses.

Per backend: a connection pool per endpoint (``http_pool``: keep-alive, a connection limit so one
slow backend cannot take every socket), a per-call deadline, a circuit breaker per endpoint,
client-side balancing over healthy endpoints, and retries for idempotent reads only, within a
retry budget and never past the deadline.

Answers are decoded straight into the payload's Struct (``into``): a 200 whose body does not
match the contract is a failed call ("invalid") that counts against the breaker, exactly like a
500, so garbage can never reach a page as data.

Endpoint discovery (``refresh_interval`` > 0, ``MARQUEE_BACKEND_DNS_REFRESH``): each configured
URL's host name is resolved every ``refresh_interval`` seconds and every address it names becomes
an endpoint of its own, with its own pool and breaker. Behind a Kubernetes headless Service the
name lists the ready pods, so the balancing and the breakers see each replica, pods the
autoscaler adds get traffic within one refresh, and removed pods leave the rotation. Until the
first answer, and whenever resolution fails or names nothing, the client keeps what it had (at
first: the name itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec

from services.platform.circuit import CircuitBreaker, State
from services.platform.http_pool import ConnectionPool
from services.platform.logs import request_id_var
from services.platform.metrics import Metrics
from services.platform.middleware import REQUEST_ID
from services.platform.schemas import ErrorEnvelope

T = TypeVar("T")

log = logging.getLogger("marquee.http_client")

# host, port -> the addresses the name stands for now
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (with any IPv4 address, IPv4 only, so a dual-stack
    pod is not counted twice)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    v4 = [a for a in addresses if ":" not in a]
    return v4 or addresses


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _netloc(address: str, port: int | None) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" if port else host


class BackendError(Exception):
    """The backend could not give an answer: down, slow, open circuit, 5xx or garbage."""

    def __init__(self, backend: str, reason: str, message: str = "") -> None:
        super().__init__(f"{backend}: {reason}{': ' + message if message else ''}")
        self.backend = backend
        self.reason = reason  # timeout | connection | circuit_open | status_5xx | invalid | ...


class BackendRejected(Exception):
    """The backend answered with a 4xx: the request itself was wrong or the thing is unknown.
    ``details``: the error's own facts, when it has any (a batch upload's bad lines)."""

    def __init__(
        self,
        backend: str,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{backend}: {status} {code}: {message}")
        self.backend = backend
        self.status = status
        self.code = code
        self.message = message
        self.details = details  # the error's details, e.g. {"retry_after": 60} of a 429


@dataclass
class RetryBudget:
    """Retries may add at most ``ratio`` of the calls (Finagle/Envoy style), so a struggling
    backend is never hit by a retry storm."""

    ratio: float = 0.2
    cap: float = 10.0
    tokens: float = 10.0

    def deposit(self) -> None:
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def withdraw(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def decoder(into: type[T]) -> msgspec.json.Decoder[T]:
    """One decoder per payload type (building one costs more than a decode)."""
    found = _decoders.get(into)
    if found is None:
        found = _decoders[into] = msgspec.json.Decoder(into)
    return found


_error_decoder = msgspec.json.Decoder(ErrorEnvelope)
_encode = msgspec.json.encode


class Endpoint:
    """One base URL of a backend: its connection pool and its circuit breaker."""

    def __init__(self, url: str, *, connections: int, breaker: CircuitBreaker) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {url!r}")
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        self.url = url.rstrip("/")
        self.prefix = parts.path.rstrip("/")
        default_port = (secure and port == 443) or (not secure and port == 80)
        self.host_header = parts.hostname if default_port else f"{parts.hostname}:{port}"
        self.pool = ConnectionPool(
            parts.hostname,
            port,
            limit=connections,
            ssl_context=ssl.create_default_context() if secure else None,
        )
        self.breaker = breaker


class BackendClient:
    def __init__(
        self,
        name: str,
        base_urls: str | tuple[str, ...] | list[str],
        *,
        timeout: float,
        metrics: Metrics | None = None,
        connections: int = 100,
        failure_threshold: int = 5,
        reset_after: float = 5.0,
        retry_ratio: float = 0.2,
        headers: Mapping[str, str] | None = None,
        refresh_interval: float = 0.0,
        resolve: Resolver = resolve_addresses,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError(f"{name}: no base URL")
        self.name = name
        self.timeout = timeout
        self.metrics = metrics
        self.headers = _header_lines(headers or {})
        self.budget = RetryBudget(ratio=retry_ratio)
        self.connections = connections
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self.seeds = [u.rstrip("/") for u in urls]  # as configured
        self.refresh_interval = refresh_interval
        self.resolve = resolve
        self.endpoints: list[Endpoint] = []
        self.breakers: dict[str, CircuitBreaker] = {}
        self._found: dict[str, list[str]] = {}  # seed -> its endpoints at the last good answer
        self._refresher: asyncio.Task[None] | None = None
        self._set_endpoints(self.seeds)
        self._next = 0
        self._outcomes: dict[str, Callable[[float], None]] = {}

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.endpoints]

    def _state_reporter(self, url: str) -> Callable[[State], None]:
        def report(state: State) -> None:
            if self.metrics:
                self.metrics.circuit_state.labels(self.name, url.rstrip("/")).set(int(state))

        return report

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        for endpoint in self.endpoints:
            endpoint.pool.close()

    # ---- endpoints ------------------------------------------------------------------------
    def _set_endpoints(self, urls: list[str]) -> None:
        """Make ``urls`` the rotation: a new endpoint gets a fresh pool and breaker, a kept one
        keeps its own (and the breaker's state), a dropped one closes its idle connections
        (calls in flight finish) and takes its gauge series with it."""
        current = {e.url: e for e in self.endpoints}
        endpoints = [
            current.get(url)
            or Endpoint(
                url,
                connections=self.connections,
                breaker=CircuitBreaker(
                    self.failure_threshold, self.reset_after, on_change=self._state_reporter(url)
                ),
            )
            for url in urls
        ]
        for url, gone in current.items():
            if url in urls:
                continue
            gone.pool.close()
            if self.metrics:
                gauge = self.metrics.circuit_state
                gauge.labels(self.name, url).set(0)  # a multiprocess file keeps the last value
                with contextlib.suppress(KeyError):
                    gauge.remove(self.name, url)
        self.endpoints = endpoints
        self.breakers = {e.url: e.breaker for e in endpoints}

    async def refresh(self) -> list[str]:
        """Resolve every configured URL's host once and update the endpoints; returns them."""
        found: list[str] = []
        for seed in self.seeds:
            parts = urlsplit(seed)
            host = parts.hostname or ""
            if _is_address(host):
                found.append(seed)
                continue
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                addresses = await self.resolve(host, port)
            except (OSError, UnicodeError) as exc:
                addresses = []
                log.warning(
                    "endpoints: cannot resolve; keeping the last ones",
                    extra={"backend": self.name, "host": host, "error": str(exc)},
                )
            if addresses:
                self._found[seed] = [
                    urlunsplit(parts._replace(netloc=_netloc(a, parts.port))) for a in addresses
                ]
            found.extend(self._found.get(seed, [seed]))
        found = list(dict.fromkeys(found))
        if found != self.urls:
            log.info(
                "endpoints changed",
                extra={"backend": self.name, "endpoints": found, "previous": self.urls},
            )
            self._set_endpoints(found)
        return found

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # never let discovery die; the endpoints we have still serve
                log.exception("endpoints: refresh failed", extra={"backend": self.name})
            await asyncio.sleep(self.refresh_interval)

    def _pick(self, tried: set[Endpoint]) -> Endpoint | None:
        """Next endpoint in rotation whose circuit lets a call through."""
        count = len(self.endpoints)
        for _ in range(count):
            endpoint = self.endpoints[self._next % count]
            self._next += 1
            if endpoint not in tried and endpoint.breaker.allow():
                return endpoint
        return None

    async def get(
        self,
        path: str,
        into: type[T],
        *,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """An idempotent read, decoded into ``into``: retried on another endpoint (or the same)
        while budget and deadline allow."""
        target = f"{path}?{urlencode(query)}" if query else path
        return await self._call("GET", target, into, None, timeout, headers, retry=True)

    async def send(
        self,
        method: str,
        path: str,
        into: type[T],
        *,
        body: object = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """A write (or any non-idempotent call): never retried here; callers use an
        Idempotency-Key so that their own retry can never apply twice. The body is ``body``
        as JSON, or ``raw`` bytes of ``content_type`` (an uploaded file)."""
        payload = raw if raw is not None else (None if body is None else _encode(body))
        if payload is not None:
            headers = {**(headers or {}), "Content-Type": content_type}
        return await self._call(method, path, into, payload, timeout, headers, retry=False)

    async def _call(
        self,
        method: str,
        target: str,
        into: type[T],
        body: bytes | None,
        timeout: float | None,
        headers: Mapping[str, str] | None,
        *,
        retry: bool,
    ) -> T:
        deadline = time.monotonic() + (timeout or self.timeout)
        if self._refresher is None and self.refresh_interval > 0:
            # on first use: the client is made before the event loop runs
            self._refresher = asyncio.create_task(self._refresh_loop(), name=f"{self.name}-dns")
        self.budget.deposit()
        tried: set[Endpoint] = set()
        last: BackendError | None = None
        while True:
            endpoint = self._pick(tried)
            if endpoint is None:
                error = last or BackendError(self.name, "circuit_open", "no healthy endpoint")
                self._count(error.reason, 0.0)
                raise error
            tried.add(endpoint)
            try:
                return await self._attempt(endpoint, method, target, into, body, headers, deadline)
            except BackendError as exc:
                last = exc
                remaining = deadline - time.monotonic()
                if not retry or exc.reason == "timeout" or remaining <= 0.005:
                    raise
                if len(tried) >= len(self.endpoints):
                    tried.clear()
                if not self.budget.withdraw():
                    raise

    async def _attempt(
        self,
        endpoint: Endpoint,
        method: str,
        target: str,
        into: type[T],
        body: bytes | None,
        headers: Mapping[str, str] | None,
        deadline: float,
    ) -> T:
        breaker = endpoint.breaker
        remaining = deadline - time.monotonic()
        request = self._encode_request(endpoint, method, target, body, headers)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(remaining):
                status, data = await endpoint.pool.request(request, repeatable=method == "GET")
        except TimeoutError:
            breaker.record_failure()
            raise self._fail(
                "timeout", started, f"no answer in {remaining * 1000:.0f} ms"
            ) from None
        except OSError as exc:  # refused, reset, closed, bad HTTP (ConnectionError is an OSError)
            breaker.record_failure()
            raise self._fail("connection", started, type(exc).__name__) from None
        except BaseException:  # cancelled: no verdict on the backend, but hand back the probe
            breaker.release()
            raise
        if status >= 500:
            breaker.record_failure()
            raise self._fail(f"status_{status}", started)
        if status >= 400:
            breaker.record_success()  # the backend is fine; the request was not
            self._count("rejected", time.perf_counter() - started)
            raise self._rejection(status, data)
        try:
            result = decoder(into).decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            breaker.record_failure()
            raise self._fail("invalid", started, f"answer breaks the contract: {exc}") from None
        breaker.record_success()
        self._count("ok", time.perf_counter() - started)
        return result

    def _encode_request(
        self,
        endpoint: Endpoint,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> bytes:
        extra = _header_lines(headers) if headers else ""
        length = "" if body is None else f"Content-Length: {len(body)}\r\n"
        head = (
            f"{method} {endpoint.prefix}{target} HTTP/1.1\r\nHost: {endpoint.host_header}\r\n"
            f"{REQUEST_ID}: {request_id_var.get()}\r\n{self.headers}{extra}{length}\r\n"
        ).encode("latin-1")
        return head if body is None else head + body

    def _rejection(self, status: int, data: bytes) -> BackendRejected:
        try:
            error = _error_decoder.decode(data).error
        except (msgspec.DecodeError, msgspec.ValidationError):
            return BackendRejected(self.name, status, "error", f"HTTP {status}")
        return BackendRejected(self.name, status, error.code, error.message, error.details)

    def _fail(self, reason: str, started: float, message: str = "") -> BackendError:
        self._count(reason, time.perf_counter() - started)
        return BackendError(self.name, reason, message)

    def _count(self, outcome: str, elapsed: float) -> None:
        """Count a call by outcome; the labelled children are bound once per outcome."""
        if self.metrics is None:
            return
        observe = self._outcomes.get(outcome)
        if observe is None:
            calls = self.metrics.backend_calls.labels(self.name, outcome)
            latency = self.metrics.backend_latency.labels(self.name)

            def observe(seconds: float, calls: Any = calls, latency: Any = latency) -> None:
                calls.inc()
                if seconds:
                    latency.observe(seconds)

            self._outcomes[outcome] = observe
        observe(elapsed)


def _header_lines(headers: Mapping[str, str]) -> str:
    """``Name: value\\r\\n`` lines; a CR or LF in a name or value would split the request."""
    lines = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n"):
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines)
