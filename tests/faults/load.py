"""A bounded load driver for the fault-injection suite: N concurrent clients request pages in a
loop while a fault is applied, and every answer is kept (status, latency, body) for the
assertions and the figures (requests, errors, p99)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import orjson

from tests.support import async_wait_until


@dataclass
class Sample:
    """One request's outcome; ``status`` 0 means no HTTP answer at all (a client-side error)."""

    started: float  # time.monotonic() when sent
    latency: float  # seconds
    status: int
    url: str
    body: str
    error: str = ""
    server_timing: str = ""
    retry_after: str | None = None  # the header, on a shed (503) answer

    def outcomes(self) -> dict[str, str]:
        """Each backend's outcome from the ``Server-Timing`` header (name -> desc)."""
        found = {}
        for entry in filter(None, (e.strip() for e in self.server_timing.split(","))):
            name, _, rest = entry.partition(";")
            desc = rest.partition('desc="')[2].rstrip('"')
            found[name] = desc
        return found

    @property
    def is_json(self) -> bool:
        return "/api/" in self.url or "/v1/" in self.url

    def json(self) -> dict:
        return orjson.loads(self.body)


@dataclass
class Load:
    """Concurrent clients, each requesting the next URL of ``urls`` until stopped.

    Bounded twice over: ``max_requests`` caps the total, and every request has a client timeout,
    so a hung server shows up as an error sample instead of a hung test."""

    session: aiohttp.ClientSession
    urls: Iterable[str]
    concurrency: int = 8
    timeout: float = 10.0  # 10x the page budget: a page slower than that is an error
    max_requests: int = 20_000
    samples: list[Sample] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _workers: list[asyncio.Task] = field(default_factory=list)

    async def __aenter__(self) -> Load:
        urls = itertools.cycle(self.urls)
        for _ in range(self.concurrency):
            self._workers.append(asyncio.create_task(self._worker(urls)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._workers)

    async def _worker(self, urls: itertools.cycle) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        while not self._stop.is_set() and len(self.samples) < self.max_requests:
            url = next(urls)
            started = time.monotonic()
            try:
                async with self.session.get(url, timeout=timeout) as resp:
                    body = await resp.text()
                sample = Sample(
                    started,
                    time.monotonic() - started,
                    resp.status,
                    url,
                    body,
                    server_timing=resp.headers.get("Server-Timing", ""),
                    retry_after=resp.headers.get("Retry-After"),
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                sample = Sample(
                    started, time.monotonic() - started, 0, url, "", f"{type(exc).__name__}: {exc}"
                )
            self.samples.append(sample)

    def since(self, t: float, until: float = float("inf")) -> list[Sample]:
        return [s for s in self.samples if t <= s.started < until]

    async def wait_for(
        self, count: int, since: float = 0.0, seconds: float = 0.0, timeout: float = 30.0
    ) -> None:
        """Until ``count`` answers to requests sent after ``since`` have come back, and the load
        has run for at least ``seconds`` since then (a phase long enough to span several
        circuit-breaker reset periods)."""

        async def enough() -> bool:
            return len(self.since(since)) >= count and time.monotonic() - since >= seconds

        await async_wait_until(enough, timeout + seconds, f"{count} requests since {since}")

    async def wait_for_sample(
        self, predicate: Callable[[Sample], bool], since: float, timeout: float, what: str
    ) -> float:
        """Until an answer to a request sent after ``since`` satisfies ``predicate``; returns
        when (monotonic) that request completed."""
        found: list[Sample] = []

        async def seen() -> bool:
            found.extend(s for s in self.since(since) if predicate(s))
            return bool(found)

        await async_wait_until(seen, timeout, what)
        return min(s.started + s.latency for s in found)


def figures(samples: list[Sample], ok: Callable[[Sample], bool] | None = None) -> dict:
    """requests, errors (answers ``ok`` rejects; by default anything but 200), latency figures."""
    ok = ok or (lambda s: s.status == 200)
    latencies = np.array([s.latency for s in samples]) * 1000 if samples else np.zeros(1)
    return {
        "requests": len(samples),
        "errors": sum(not ok(s) for s in samples),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "max_ms": round(float(latencies.max()), 1),
    }


def failures(samples: list[Sample], ok: Callable[[Sample], bool], limit: int = 3) -> str:
    """A few failing samples, for assertion messages."""
    bad = [s for s in samples if not ok(s)][:limit]
    return "; ".join(f"{s.url} -> {s.status} {s.error or s.body[:200]!r}" for s in bad)
