"""Prometheus metrics. One registry per app, so several apps in one process (tests, the monolith's
components) never collide, and every component reports through the same object."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "marquee_http_requests",
            "HTTP requests served",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "marquee_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_calls = Counter(
            "marquee_backend_calls",
            "Calls to backends by outcome",
            ["backend", "outcome"],
            registry=r,
        )
        self.backend_latency = Histogram(
            "marquee_backend_call_duration_seconds",
            "Backend call latency",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.circuit_state = Gauge(
            "marquee_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["backend", "endpoint"],
            registry=r,
        )
        self.cache = Counter(
            "marquee_cache_requests", "Cache lookups by result", ["cache", "result"], registry=r
        )
        self.shed = Counter(
            "marquee_requests_shed",
            "Requests answered 503 at once because too many were in progress",
            registry=r,
        )
        self.fallbacks = Counter(
            "marquee_fallbacks", "Degraded page fragments", ["fragment", "reason"], registry=r
        )
        self.model_version = Gauge(
            "marquee_model_info", "The model version loaded (value 1)", ["version"], registry=r
        )
        self.batch_queue_depth = Gauge(
            "marquee_batch_queue_depth", "Batch jobs waiting or running", registry=r
        )
        self.batch_rows = Counter("marquee_batch_rows", "Batch rows computed", registry=r)

        self._request_children: dict[tuple[str, str, int], tuple] = {}
        self._fallback_children: dict[tuple[str, str], Counter] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one served request. The labelled children are bound once per label set:
        ``labels()`` on every request costs more than the rest of the accounting."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_fallback(self, fragment: str, reason: str) -> None:
        """One degraded page fragment (the child bound once per label pair, as above)."""
        key = (fragment, reason)
        child = self._fallback_children.get(key)
        if child is None:
            child = self._fallback_children[key] = self.fallbacks.labels(fragment, reason)
        child.inc()

    def set_model_version(self, version: str) -> None:
        self.model_version.clear()
        self.model_version.labels(version=version).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
