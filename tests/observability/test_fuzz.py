"""Fuzzing: schemathesis generates requests from each service's live /openapi.json (valid and
invalid ones) and checks that none is answered with a 5xx or takes longer than its deadline.

Five targets run at once, each its own schemathesis process: the catalog, subscription and
recommender services and the microservices-mode web server (the ``logged_stack`` processes), and
a monolith web server. The admin token is sent to the recommender so reload / rollback run for
real - against a throwaway copy of the model registry - and the service token to the
subscription service so writes are exercised, not only refused. Every request is recorded in a
HAR file; the number tried per target is printed (run with -s) and checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.observability.conftest import copy_model_dir
from tests.observability.helpers import scrape, value
from tests.support import PROJECT_ROOT, TEST_SECRETS

MAX_EXAMPLES = 60  # per operation and phase; ~1,000+ requests per target
REQUEST_TIMEOUT = 5.0  # a request still unanswered after this counts as a hang
# The five runs share two cores (~60 s when the machine is quiet); generous for a busy machine.
RUN_TIMEOUT = 600.0


def _command(url: str, har: Path, headers: list[str]) -> list[str]:
    options = (
        f"--checks not_a_server_error --max-examples {MAX_EXAMPLES} --workers 1"
        f" --request-timeout {REQUEST_TIMEOUT} --max-response-time {REQUEST_TIMEOUT}"
        " --seed 20240601 --generation-database none --suppress-health-check all"
        " --report har --no-color"
    )
    args = [
        sys.executable,
        "-m",
        "tests.observability.schemathesis_cli",
        "run",
        f"{url}/openapi.json",
        *options.split(),
        "--report-har-path",
        str(har),
    ]
    for header in headers:
        args += ["-H", header]
    return args


def _requests_in(har: Path) -> list[dict]:
    return orjson.loads(har.read_bytes())["log"]["entries"]


@pytest.mark.timeout(RUN_TIMEOUT + 120)
async def test_no_server_errors_and_no_hangs_under_fuzzing(
    logged_stack, settings, run_service, tmp_path, http, model_dir
):
    from tests.observability.conftest import service_env

    models = copy_model_dir(model_dir, tmp_path / "monolith-models")
    monolith, _ = run_service(
        ["-m", "web_server"],
        service_env(
            settings,
            mode="monolith",
            model_dir=models,
            access_log=False,
        ),
        "MARQUEE_WEB_PORT",
    )
    service = f"Authorization: Bearer {TEST_SECRETS['service_token']}"
    admin = f"Authorization: Bearer {TEST_SECRETS['admin_token']}"
    targets = {
        "catalog": (logged_stack.catalog_url, []),
        "subscription": (logged_stack.subscription_url, [service]),
        "recommender": (logged_stack.recommender_url, [admin]),
        "web-microservices": (logged_stack.web_url, []),
        "web-monolith": (monolith, [admin]),
    }
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(PROJECT_ROOT)}
    started = time.monotonic()
    runs = {}
    for name, (url, headers) in targets.items():
        out = (tmp_path / f"{name}.out").open("wb")
        runs[name] = subprocess.Popen(
            _command(url, tmp_path / f"{name}.har", headers),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
        out.close()
    failures = {}
    try:
        for name, proc in runs.items():
            left = max(1.0, RUN_TIMEOUT - (time.monotonic() - started))
            code = proc.wait(left)
            if code != 0:
                failures[name] = (tmp_path / f"{name}.out").read_text()[-6000:]
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - started

    tried = {}
    for name in targets:
        entries = _requests_in(tmp_path / f"{name}.har")
        tried[name] = len(entries)
        statuses = [e["response"]["status"] for e in entries]
        assert not [s for s in statuses if s >= 500], f"{name}: 5xx answers"
    print(f"\nfuzzing: {sum(tried.values())} requests in {elapsed:.1f}s: {tried}")
    assert not failures, "\n\n".join(f"== {n}\n{t}" for n, t in failures.items())
    assert all(n >= 200 for n in tried.values()), tried
    assert sum(tried.values()) >= 3000, tried

    # every service is still healthy, and its own counters saw no 5xx either
    for url, _ in targets.values():
        text = await scrape(http, url)
        fives = sum(
            value(text, "marquee_http_requests_total", status=str(s)) for s in range(500, 600)
        )
        assert fives == 0, f"{url}: 5xx in /metrics"
        async with http.get(f"{url}/readyz") as resp:
            assert resp.status == 200, url
