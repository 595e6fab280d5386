"""Every service's /metrics names the families operators need, and they move with traffic."""

from __future__ import annotations

import pytest

from services.platform.settings import Settings
from tests.conftest import replace
from tests.observability.helpers import families, samples, scrape, value
from tests.support import SERVICE, async_wait_until
from tests.web.conftest import stub_settings
from tests.web.helpers import browser

HTTP_FAMILIES = {"marquee_http_requests", "marquee_http_request_duration_seconds"}


def _app(name: str, settings: Settings):
    if name == "catalog":
        from services.catalog.app import create_app
    elif name == "subscription":
        from services.subscription.app import create_app
    elif name == "recommender":
        from recommender.app import create_app
    else:
        from web_server.app import create_app
    return create_app(settings)


# (service, a path answered 200, its route, a path answered 404 on the same route)
CASES = [
    ("catalog", "/v1/movies/1", "/v1/movies/{movie_id}", "/v1/movies/999999"),
    ("recommender", "/v1/similar/1", "/v1/similar/{movie_id}", "/v1/similar/999999"),
    ("web", "/api/pages/movies/1", "/api/pages/movies/{id}", "/api/pages/movies/999999"),
    ("subscription", "/v1/plans", "/v1/plans", None),
]


@pytest.mark.parametrize(("service", "ok", "route", "missing"), CASES)
async def test_request_count_and_latency_by_route_and_status(
    service, ok, route, missing, settings, serve_app, http
):
    base = await serve_app(_app(service, settings))
    before = await scrape(http, base)
    assert families(before) >= HTTP_FAMILIES
    for _ in range(3):
        async with http.get(base + ok) as resp:
            assert resp.status == 200
    if missing:
        async with http.get(base + missing) as resp:
            assert resp.status == 404
    after = await scrape(http, base)
    total = "marquee_http_requests_total"
    assert (
        value(after, total, route=route, method="GET", status="200")
        - value(before, total, route=route, method="GET", status="200")
        == 3
    )
    if missing:
        assert value(after, total, route=route, method="GET", status="404") == 1
    count = "marquee_http_request_duration_seconds_count"
    assert value(after, count, route=route, method="GET") == (4 if missing else 3)
    assert value(after, "marquee_http_request_duration_seconds_sum", route=route) > 0
    # an unrouted path is counted under one label, not one series per junk path
    async with http.get(f"{base}/nope/{service}/x") as resp:
        assert resp.status == 404
    final = await scrape(http, base)
    assert value(final, total, route="unmatched", status="404") == 1
    assert not [line for line in final.splitlines() if f"/nope/{service}" in line]


async def test_recommender_cache_hits_misses_and_model_version(settings, serve_app, http):
    base = await serve_app(_app("recommender", settings))
    async with http.get(f"{base}/v1/model") as resp:
        version = (await resp.json())["version"]
    text = await scrape(http, base)
    assert value(text, "marquee_model_info", version=version) == 1
    assert len([1 for line in text.splitlines() if line.startswith("marquee_model_info{")]) == 1
    sources = []
    for _ in range(2):
        async with http.get(f"{base}/v1/similar/2?k=5") as resp:
            sources.append((await resp.json())["source"])
    assert sources == ["collaborative", "cache"]
    after = await scrape(http, base)
    cache = "marquee_cache_requests_total"
    assert value(after, cache, result="miss") - value(text, cache, result="miss") >= 1
    assert value(after, cache, result="hit") - value(text, cache, result="hit") >= 1


async def test_web_backend_calls_outcomes_and_latency_in_process(settings, serve_app, http):
    base = await serve_app(_app("web", replace(settings, mode="monolith")))
    async with http.get(f"{base}/movies/1") as resp:
        assert resp.status == 200
        await resp.read()  # the whole streamed page: its calls are done
    text = await scrape(http, base)
    for backend in ("catalog", "recommender"):
        assert value(text, "marquee_backend_calls_total", backend=backend, outcome="ok") >= 1
        assert value(text, "marquee_backend_call_duration_seconds_count", backend=backend) >= 1
    assert "marquee_fallbacks" in families(text)


async def test_web_fallbacks_and_circuit_state_over_http(
    tmp_path,
    stub_backends,
    serve_app,
    http,
):
    """A failing recommender: each page falls back (counted), the circuit opens (gauge = 2)."""
    from web_server.app import create_app

    settings = stub_settings(tmp_path, stub_backends, breaker_failures=3, breaker_reset=30.0)
    base = await serve_app(create_app(settings))
    stub_backends.recommender.mode = "error500"
    async with browser() as session:
        for _ in range(6):
            async with session.get(f"{base}/api/pages/movies/1") as resp:
                assert resp.status == 200
                assert "similar" in (await resp.json())["degraded"]
    text = await scrape(http, base)
    assert value(text, "marquee_fallbacks_total", fragment="similar") == 6
    assert value(text, "marquee_backend_calls_total", backend="recommender") >= 3
    outcomes = {
        labels["outcome"]
        for name, labels, _ in samples(text)
        if name == "marquee_backend_calls_total" and labels["backend"] == "recommender"
    }
    assert "circuit_open" in outcomes, outcomes
    assert value(text, "marquee_circuit_state", backend="recommender") == 2
    assert value(text, "marquee_circuit_state", backend="catalog") == 0
    assert value(text, "marquee_backend_calls_total", backend="catalog", outcome="ok") >= 6


async def test_circuit_closes_again_when_the_backend_recovers(
    tmp_path,
    stub_backends,
    serve_app,
    http,
):
    from web_server.app import create_app

    settings = stub_settings(tmp_path, stub_backends, breaker_failures=2, breaker_reset=0.2)
    base = await serve_app(create_app(settings))
    stub_backends.recommender.mode = "error500"
    for _ in range(4):
        async with http.get(f"{base}/api/pages/movies/1") as resp:
            assert resp.status == 200
    assert value(await scrape(http, base), "marquee_circuit_state", backend="recommender") == 2
    stub_backends.recommender.mode = "ok"

    async def closed() -> bool:
        async with http.get(f"{base}/api/pages/movies/1") as resp:
            await resp.read()
        return value(await scrape(http, base), "marquee_circuit_state", backend="recommender") == 0

    await async_wait_until(closed, 10, "the recommender circuit to close")


async def test_batch_queue_depth_and_rows(settings, serve_app, http):
    """Queued jobs raise the depth gauge; the monolith's in-process worker drains it and counts
    the rows it computed."""
    csv = {"data": b"movie_id\n1\n2\n3\n", "headers": {"Content-Type": "text/csv", **SERVICE}}
    queue_only = await serve_app(_app("recommender", settings))  # no worker in this process
    for _ in range(2):
        async with http.post(f"{queue_only}/v1/batch", **csv) as resp:
            assert resp.status == 202
    assert value(await scrape(http, queue_only), "marquee_batch_queue_depth") == 2

    monolith = await serve_app(_app("web", replace(settings, mode="monolith")))
    async with http.post(f"{monolith}/v1/batch", **csv) as resp:
        assert resp.status == 202

    async def drained() -> bool:
        text = await scrape(http, monolith)
        return (
            value(text, "marquee_batch_rows_total") >= 3
            and value(text, "marquee_batch_queue_depth") == 0
        )

    await async_wait_until(drained, 20, "the worker to finish the queued jobs")


async def test_queue_depth_follows_a_separate_worker_process(
    settings, serve_app, http, run_service
):
    """Microservices: workers (``python -m recommender worker``) serve no /metrics; the
    recommender reads the queue's depth from Redis at each scrape, so the gauge drains too."""
    from tests.observability.conftest import service_env
    from tests.support import PYTHON, Process

    base = await serve_app(_app("recommender", settings))
    async with http.post(
        f"{base}/v1/batch", data=b"user_id\n1\n2\n", headers={"Content-Type": "text/csv", **SERVICE}
    ) as resp:
        assert resp.status == 202
    assert value(await scrape(http, base), "marquee_batch_queue_depth") == 1
    worker = Process(
        [PYTHON, "-m", "recommender", "worker"],
        service_env(settings),
        settings.var_dir / "worker.log",
    ).start()
    try:

        async def drained() -> bool:
            return value(await scrape(http, base), "marquee_batch_queue_depth") == 0

        await async_wait_until(drained, 30, "the worker process to drain the queue")
    finally:
        worker.stop()


def test_tallied_requests_expose_exactly_what_observe_would() -> None:
    """Requests are tallied and added to the Prometheus values in batches; the exposition must be
    the one ``Counter.inc`` and ``Histogram.observe`` give for the same requests, bucket by
    bucket (this also guards the histogram internals the batching writes to)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from services.platform.metrics import LATENCY_BUCKETS, Metrics

    seconds = [0.0001, 0.0005, 0.0007, 0.003, 0.2, 0.2, 7.0, 42.0]
    batched = Metrics("web")
    for spent in seconds:
        batched.observe_request("/movies/{id}", "GET", 200, spent)
    batched.observe_request("/movies/{id}", "GET", 404, 0.001)

    registry = CollectorRegistry()
    requests = Counter(
        "marquee_http_requests", "", ["route", "method", "status"], registry=registry
    )
    latency = Histogram(
        "marquee_http_request_duration_seconds",
        "",
        ["route", "method"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for spent in seconds:
        requests.labels("/movies/{id}", "GET", "200").inc()
        latency.labels("/movies/{id}", "GET").observe(spent)
    requests.labels("/movies/{id}", "GET", "404").inc()
    latency.labels("/movies/{id}", "GET").observe(0.001)

    def request_samples(text: bytes) -> set[tuple[str, tuple, float]]:
        return {
            (n, tuple(sorted(labels.items())), v)
            for n, labels, v in samples(text.decode())
            if n.startswith(("marquee_http_requests_total", "marquee_http_request_duration"))
            and not n.endswith("_created")  # when each series began: not a count
        }

    expected = request_samples(generate_latest(registry))
    assert expected and request_samples(batched.exposition()) == expected


def memo_hits(metrics) -> float | None:
    return metrics.registry.get_sample_value(
        "marquee_cache_requests_total", {"cache": "memo", "result": "hit"}
    )


async def test_tallied_counts_reach_prometheus_at_the_next_turn_of_the_loop() -> None:
    import asyncio

    from services.platform.metrics import Metrics

    metrics = Metrics("recommender")
    hits = metrics.tallied(metrics.cache.labels("memo", "hit"))
    hits.inc()
    hits.inc(2)
    assert not memo_hits(metrics), "counted in plain Python first"
    await asyncio.sleep(0)  # one turn of the loop: the flush it scheduled runs
    assert memo_hits(metrics) == 3


def test_tallied_counts_are_written_through_without_a_loop() -> None:
    from services.platform.metrics import Metrics

    metrics = Metrics("recommender")
    hits = metrics.tallied(metrics.cache.labels("memo", "hit"))
    hits.inc()
    hits.inc(2)
    assert memo_hits(metrics) == 3
