"""With MARQUEE_WORKERS > 1 a scrape reaches one worker, yet it reports the requests of all of them
(prometheus-client's multiprocess mode), plus every worker's process metrics."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.observability.conftest import service_env
from tests.observability.helpers import samples, scrape, value
from tests.support import async_wait_until

ROUTE = "/v1/movies/{movie_id}"
REQUESTS = 60
SCRAPES = 8


def metrics_dir(settings, base: str) -> Path:
    return settings.var_dir / "metrics" / f"catalog-{base.rsplit(':', 1)[1]}"


def worker_pids(directory: Path) -> set[int]:
    """The workers that wrote metrics files (one gauge file each, from start-up on)."""
    return {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("gauge_*.db")}


def requests_in(path: Path, route: str = ROUTE) -> float:
    """The route's requests counted in one worker's counter file."""
    return sum(
        s.value
        for family in MultiProcessCollector.merge([str(path)])
        for s in family.samples
        if s.name == "marquee_http_requests_total" and s.labels.get("route") == route
    )


def process_pids(text: str, family: str = "process_resident_memory_bytes") -> set[str]:
    return {labels["pid"] for name, labels, _ in samples(text) if name == family}


@pytest.fixture
async def fresh_connections():
    """A client that opens a new connection per request, so the kernel spreads them (and the
    scrapes) over the workers listening on the port."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def two_workers(settings, run_service, http) -> tuple[str, Path, object]:
    base, process = run_service(
        ["-m", "services.catalog"], service_env(settings, workers=2), "MARQUEE_CATALOG_PORT"
    )
    directory = metrics_dir(settings, base)

    async def both_serving() -> bool:
        """Both workers have answered a request (a worker writes its files before it listens)."""
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        pids = worker_pids(directory)
        return len(pids) == 2 and all(
            (path := directory / f"counter_{pid}.db").exists() and requests_in(path, "/healthz")
            for pid in pids
        )

    await async_wait_until(both_serving, 60, "both workers to answer")
    return base, directory, process


async def test_every_scrape_of_two_workers_counts_every_request(
    settings, run_service, fresh_connections
):
    http = fresh_connections
    base, directory, _ = await two_workers(settings, run_service, http)
    for i in range(REQUESTS):
        async with http.get(f"{base}/v1/movies/{1 + i % 5}") as resp:
            assert resp.status == 200
    counts = [
        value(await scrape(http, base), "marquee_http_requests_total", route=ROUTE, status="200")
        for _ in range(SCRAPES)
    ]
    assert counts == [REQUESTS] * SCRAPES
    # both workers served a share, so the scrapes above really added two processes' counts
    shares = [requests_in(path) for path in sorted(directory.glob("counter_*.db"))]
    assert len(shares) == 2 and all(shares), shares
    assert sum(shares) == REQUESTS


async def test_process_metrics_cover_every_worker_and_the_runner(
    settings, run_service, fresh_connections
):
    base, directory, process = await two_workers(settings, run_service, fresh_connections)
    text = await scrape(fresh_connections, base)
    pids = {str(p) for p in worker_pids(directory)} | {str(process.pid)}
    assert process_pids(text) == pids
    for family in ("process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds"):
        assert process_pids(text, family) == pids


async def test_a_killed_workers_requests_still_count_and_its_live_gauges_go(
    settings, run_service, fresh_connections
):
    http = fresh_connections
    base, directory, _ = await two_workers(settings, run_service, http)
    for i in range(REQUESTS):
        async with http.get(f"{base}/v1/movies/{1 + i % 5}") as resp:
            assert resp.status == 200
    victim = min(worker_pids(directory))
    os.kill(victim, signal.SIGKILL)

    async def marked_dead() -> bool:
        return not list(directory.glob(f"gauge_live*_{victim}.db"))

    await async_wait_until(marked_dead, 30, "the runner to mark the worker dead")
    assert (directory / f"counter_{victim}.db").exists()  # what it served stays counted
    for _ in range(5):  # the surviving worker answers; the sum holds
        async with http.get(f"{base}/v1/movies/1") as resp:
            assert resp.status == 200
    text = await scrape(http, base)
    assert value(text, "marquee_http_requests_total", route=ROUTE, status="200") == REQUESTS + 5
    assert str(victim) not in process_pids(text)
