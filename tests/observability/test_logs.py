"""Structured logs: a service process writes one JSON object per line, one line per request, with
the request id, route, status and duration; the id is the caller's X-Request-ID or a new one."""

from __future__ import annotations

import os
import uuid

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from services.platform.logs import AccessLog
from tests.observability.conftest import service_env
from tests.observability.helpers import access_lines, json_lines
from tests.support import wait_until

SERVICES = {
    "catalog": (
        ["-m", "services.catalog"],
        "MARQUEE_CATALOG_PORT",
        "/v1/movies/1",
        "/v1/movies/{movie_id}",
    ),
    "subscription": (
        ["-m", "services.subscription"],
        "MARQUEE_SUBSCRIPTION_PORT",
        "/v1/plans",
        "/v1/plans",
    ),
}


@pytest.mark.parametrize("name", list(SERVICES))
async def test_one_json_line_per_request_with_its_id(name, settings, run_service, http):
    args, port_var, path, route = SERVICES[name]
    base, process = run_service(args, service_env(settings), port_var)
    request_id = f"test-{uuid.uuid4().hex}"
    async with http.get(base + path, headers={"X-Request-ID": request_id}) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-ID"] == request_id  # echoed back to the caller
    async with http.get(base + "/v1/movies/abc", headers={"X-Request-ID": request_id + "-bad"}):
        pass

    wait_until(lambda: access_lines(process.log_path, request_id), 5, "the access log line")
    [line] = access_lines(process.log_path, request_id)
    assert line["service"] == name
    assert line["route"] == route and line["path"] == path and line["method"] == "GET"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0
    assert line["level"] == "info" and line["ts"].endswith("Z")

    wait_until(lambda: access_lines(process.log_path, request_id + "-bad"), 5, "the 4xx line")
    [bad] = access_lines(process.log_path, request_id + "-bad")
    assert bad["status"] in (400, 404)

    # every line the process wrote is JSON: no stray prints, no tracebacks as plain text
    text = process.log_path.read_text().splitlines()
    assert len(json_lines(process.log_path)) == len([t for t in text if t.strip()])


async def test_request_id_made_when_missing_or_unsafe(settings, run_service, http):
    base, process = run_service(
        ["-m", "services.catalog"], service_env(settings), "MARQUEE_CATALOG_PORT"
    )
    made = []
    for header in ({}, {"X-Request-ID": "x" * 500}, {"X-Request-ID": "bad\tid"}):
        async with http.get(f"{base}/v1/genres", headers=header) as resp:
            assert resp.status == 200
            made.append(resp.headers["X-Request-ID"])
    assert len(set(made)) == 3
    for request_id in made:
        assert 0 < len(request_id) <= 128 and request_id.isalnum()
        wait_until(lambda r=request_id: access_lines(process.log_path, r), 5, "its log line")


def logged_ids(log: AccessLog, read_fd: int) -> list[str]:
    log.flush()
    os.set_blocking(read_fd, False)
    try:
        data = os.read(read_fd, 1 << 20)
    except BlockingIOError:
        return []
    return [orjson.loads(line)["request_id"] for line in data.splitlines()]


MOVIE = make_mocked_request("GET", "/v1/movies/1")
MOVIES = make_mocked_request("GET", "/v1/movies")
SIMILAR = make_mocked_request("GET", "/v1/similar/1")


def sampled_log(service: str, sample: int) -> tuple[AccessLog, int]:
    read_fd, write_fd = os.pipe()
    return AccessLog(service, write_fd, sample=sample, slow=0.25), read_fd


def test_quick_reads_are_sampled_by_request_id_alike_in_every_service() -> None:
    catalog, catalog_out = sampled_log("catalog", 10)
    recommender, recommender_out = sampled_log("recommender", 10)
    ids = [f"page-{n}" for n in range(300)]
    for request_id in ids:
        catalog.write(request_id, "GET", "/v1/movies/{movie_id}", MOVIE, 200, 0.001)
        recommender.write(request_id, "GET", "/v1/similar/{movie_id}", SIMILAR, 200, 0.001)
    sampled = logged_ids(catalog, catalog_out)
    assert sampled == logged_ids(recommender, recommender_out), "one page: logged by all or none"
    assert 0 < len(sampled) < len(ids) / 3


def test_errors_writes_and_slow_requests_are_always_logged() -> None:
    log, out = sampled_log("catalog", 1_000_000)
    kept = {"error": ("GET", 404, 0.001), "write": ("POST", 201, 0.001), "slow": ("GET", 200, 0.3)}
    for request_id, (method, status, seconds) in kept.items():
        log.write(request_id, method, "/v1/movies", MOVIES, status, seconds)
        log.write(request_id, "GET", "/v1/movies", MOVIES, 200, 0.001)  # a quick read: not this one
    assert logged_ids(log, out) == list(kept)


def test_a_sample_of_one_logs_every_request() -> None:
    log, out = sampled_log("catalog", 1)
    for n in range(50):
        log.write(f"r{n}", "GET", "/v1/movies", MOVIES, 200, 0.001)
    assert logged_ids(log, out) == [f"r{n}" for n in range(50)]
