"""What the dashboard reads out of a Prometheus exposition: page latency per route, cache hit
ratios and the batch queue depth.

The same text is read whether it came from this process (``Metrics.exposition``, all workers
merged) or from a backend's ``/metrics`` over HTTP, so the monolith and the microservices
deployment show the same numbers the same way, and exactly what a scrape would see.
Percentiles come from the histogram buckets the way PromQL's ``histogram_quantile`` makes them
(linear within the bucket that holds the rank), over everything since the process started.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

LATENCY = "marquee_http_request_duration_seconds"
CACHE = "marquee_cache_requests"
QUEUE_DEPTH = "marquee_batch_queue_depth"
# Routes that are machinery, not pages or APIs people wait for.
QUIET_ROUTES = frozenset(("/healthz", "/readyz", "/metrics", "/openapi.json"))


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class RouteLatency:
    route: str
    method: str
    count: int
    p50: float | None  # seconds
    p99: float | None


@dataclass(frozen=True)
class CacheRatio:
    source: str  # where the counts come from (this process, a recommender replica)
    cache: str
    hits: int
    misses: int
    other: int  # errors and bypasses: lookups that were neither
    ratio: float | None  # hits / (hits + misses); None before any lookup


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition (raises ValueError on text that is not one)."""
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append(Sample(s.name, dict(s.labels), float(s.value)))
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile``: ``buckets`` are (upper bound, cumulative count), +Inf last.
    A rank in the +Inf bucket is answered with the highest finite bound."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def route_latencies(found: list[Sample]) -> list[RouteLatency]:
    """p50 and p99 per route and method, busiest first; machinery routes left out."""
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    counts: dict[tuple[str, str], float] = {}
    for s in found:
        key = (s.labels.get("route", ""), s.labels.get("method", ""))
        if key[0] in QUIET_ROUTES:
            continue
        if s.name == f"{LATENCY}_bucket":
            buckets[key].append((float(s.labels["le"]), s.value))
        elif s.name == f"{LATENCY}_count":
            counts[key] = s.value
    rows = [
        RouteLatency(
            route,
            method,
            int(counts.get((route, method), 0)),
            quantile(0.5, bs),
            quantile(0.99, bs),
        )
        for (route, method), bs in buckets.items()
    ]
    return sorted((r for r in rows if r.count), key=lambda r: (-r.count, r.route, r.method))


def cache_ratios(found: list[Sample], source: str) -> list[CacheRatio]:
    """Hits over hits and misses, per cache (``marquee_cache_requests`` by ``result``)."""
    by_cache: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for s in found:
        if s.name in (f"{CACHE}_total", CACHE):
            by_cache[s.labels.get("cache", "?")][s.labels.get("result", "?")] += s.value
    out = []
    for cache, results in sorted(by_cache.items()):
        hits, misses = int(results.pop("hit", 0)), int(results.pop("miss", 0))
        other = int(sum(results.values()))
        ratio = hits / (hits + misses) if hits + misses else None
        out.append(CacheRatio(source, cache, hits, misses, other, ratio))
    return out


def gauge(found: list[Sample], name: str) -> float | None:
    """A label-less gauge's value (the largest, should several processes report one)."""
    values = [s.value for s in found if s.name == name]
    return max(values) if values else None
