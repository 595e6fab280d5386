"""Structured logs: a service process writes one JSON object per line, one line per request, with
the request id, route, status and duration; the id is the caller's X-Request-ID or a new one."""

from __future__ import annotations

import uuid

import pytest

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
