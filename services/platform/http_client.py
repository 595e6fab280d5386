"""The resilient HTTP client every caller of a Marquee service uses.

One ``aiohttp.ClientSession`` per backend (keep-alive, a connection limit so one slow backend cannot
take every socket), a per-call deadline, a circuit breaker per endpoint, client-side balancing over
healthy endpoints, and retries for idempotent reads only, within a retry budget and never past the
deadline.

Endpoint discovery (``refresh_interval`` > 0, ``MARQUEE_BACKEND_DNS_REFRESH``): each configured
URL's host name is resolved every ``refresh_interval`` seconds and every address it names becomes
an endpoint of its own, with its own breaker. Behind a Kubernetes headless Service the name lists
the ready pods, so the balancing and the breakers see each replica, pods the autoscaler adds get
traffic within one refresh, and removed pods leave the rotation. Until the first answer, and
whenever resolution fails or names nothing, the client keeps what it had (at first: the name).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from yarl import URL

from services.platform.circuit import CircuitBreaker, State
from services.platform.logs import request_id_var
from services.platform.metrics import Metrics
from services.platform.middleware import REQUEST_ID

log = logging.getLogger("marquee.http_client")

# host, port -> the addresses the name stands for now
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (A records first: with any IPv4 address, IPv4 only, so
    a dual-stack pod is not counted twice)."""
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


class BackendError(Exception):
    """The backend could not give an answer: down, slow, open circuit, 5xx or garbage."""

    def __init__(self, backend: str, reason: str, message: str = "") -> None:
        super().__init__(f"{backend}: {reason}{': ' + message if message else ''}")
        self.backend = backend
        self.reason = reason  # timeout | connection | circuit_open | status_5xx | invalid | ...


class BackendRejected(Exception):
    """The backend answered with a 4xx: the request itself was wrong or the thing is unknown."""

    def __init__(self, backend: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{backend}: {status} {code}: {message}")
        self.backend = backend
        self.status = status
        self.code = code
        self.message = message


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
        headers: dict[str, str] | None = None,
        refresh_interval: float = 0.0,
        resolve: Resolver = resolve_addresses,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError(f"{name}: no base URL")
        self.name = name
        self.seeds = [u.rstrip("/") for u in urls]  # as configured
        self.timeout = timeout
        self.metrics = metrics
        self.connections = connections
        self.headers = headers or {}
        self.budget = RetryBudget(ratio=retry_ratio)
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self.refresh_interval = refresh_interval
        self.resolve = resolve
        self.breakers: dict[str, CircuitBreaker] = {}
        self._found: dict[str, list[str]] = {}  # seed -> its endpoints at the last good answer
        self._set_endpoints(self.seeds)
        self._refresher: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    # ---- endpoints ------------------------------------------------------------------------
    def _set_endpoints(self, urls: list[str]) -> None:
        """Make ``urls`` the rotation: a new endpoint gets a fresh breaker, a kept one keeps its
        own (and its state), a dropped one takes its breaker and its gauge series with it."""
        for url in urls:
            if url not in self.breakers:
                self.breakers[url] = CircuitBreaker(
                    self.failure_threshold, self.reset_after, on_change=self._state_reporter(url)
                )
        for url in [u for u in self.breakers if u not in urls]:
            del self.breakers[url]
            if self.metrics:
                gauge = self.metrics.circuit_state
                gauge.labels(self.name, url).set(0)  # a multiprocess file keeps the last value
                with contextlib.suppress(KeyError):
                    gauge.remove(self.name, url)
        self.urls = list(urls)
        self._rotation = itertools.cycle(self.urls)

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

    def _start_refreshing(self) -> None:
        if self.refresh_interval > 0 and self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh_loop(), name=f"{self.name}-endpoints"
            )

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # never let discovery die; the endpoints we have still serve
                log.exception("endpoints: refresh failed", extra={"backend": self.name})
            await asyncio.sleep(self.refresh_interval)

    def _state_reporter(self, url: str):
        def report(state: State) -> None:
            if self.metrics:
                self.metrics.circuit_state.labels(self.name, url).set(int(state))

        return report

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.connections, limit_per_host=self.connections, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                timeout=aiohttp.ClientTimeout(total=None),  # each call has its own deadline
                # service calls carry no cookies: skip the jar's per-request filtering (~8%
                # of a call's CPU)
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._session is not None:
            await self._session.close()

    @property
    def circuit_open(self) -> bool:
        return all(b.state is State.OPEN for b in self.breakers.values())

    def _pick(self, tried: set[str]) -> str | None:
        """Next endpoint in rotation whose circuit lets a call through."""
        for _ in range(len(self.urls)):
            url = next(self._rotation)
            if url not in tried and self.breakers[url].allow():
                return url
        return None

    async def get_json(
        self,
        path: str,
        *,
        params: dict | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """An idempotent read: retried on another endpoint (or the same) while budget and deadline
        allow."""
        return await self._call(
            "GET", path, params=params, timeout=timeout, headers=headers, retry=True
        )

    async def send_json(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        params: dict | None = None,
    ) -> Any:
        """A write (or non-idempotent call): never retried here; callers use Idempotency-Key."""
        return await self._call(
            method,
            path,
            json=json,
            params=params,
            timeout=timeout,
            headers=headers,
            retry=method in ("GET", "HEAD"),
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params=None,
        json=None,
        timeout=None,
        headers=None,
        retry: bool,
    ) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        if self._refresher is None and self.refresh_interval > 0:
            self._start_refreshing()  # on first use: the client is made outside the event loop
        self.budget.deposit()
        tried: set[str] = set()
        last: BackendError | None = None
        while True:
            url = self._pick(tried)
            if url is None:
                error = last or BackendError(self.name, "circuit_open", "no healthy endpoint")
                self._count(error.reason, 0.0)
                raise error
            tried.add(url)
            try:
                return await self._attempt(url, method, path, params, json, headers, deadline)
            except BackendError as exc:
                last = exc
                remaining = deadline - time.monotonic()
                if not retry or exc.reason == "timeout" or remaining <= 0.005:
                    raise
                if len(tried) >= len(self.urls):
                    tried.clear()
                if not self.budget.withdraw():
                    raise

    async def _attempt(self, url, method, path, params, json, headers, deadline) -> Any:
        breaker = self.breakers.get(url) or CircuitBreaker(self.failure_threshold, self.reset_after)
        remaining = deadline - time.monotonic()
        all_headers = {REQUEST_ID: request_id_var.get(), **self.headers, **(headers or {})}
        started = time.perf_counter()
        try:
            async with asyncio.timeout(remaining):
                async with self.session.request(
                    method,
                    URL(url + path, encoded=True),
                    params=params,
                    json=json,
                    headers=all_headers,
                ) as resp:
                    body = await resp.read()
        except TimeoutError:
            breaker.record_failure()
            raise self._fail(
                "timeout", started, f"no answer in {remaining * 1000:.0f} ms"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            breaker.record_failure()
            raise self._fail("connection", started, type(exc).__name__) from None
        if resp.status >= 500:
            breaker.record_failure()
            raise self._fail(f"status_{resp.status}", started)
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            breaker.record_failure()
            raise self._fail("invalid", started, "response is not JSON") from None
        breaker.record_success()
        elapsed = time.perf_counter() - started
        if resp.status >= 400:
            self._count("rejected", elapsed)
            error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            raise BackendRejected(
                self.name,
                resp.status,
                str(error.get("code", "error")),
                str(error.get("message", resp.reason)),
            )
        self._count("ok", elapsed)
        return data

    def _fail(self, reason: str, started: float, message: str = "") -> BackendError:
        self._count(reason, time.perf_counter() - started)
        return BackendError(self.name, reason, message)

    def _count(self, outcome: str, elapsed: float) -> None:
        if self.metrics:
            self.metrics.backend_calls.labels(self.name, outcome).inc()
            if elapsed:
                self.metrics.backend_latency.labels(self.name).observe(elapsed)


def _netloc(address: str, port: int | None) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" if port else host
