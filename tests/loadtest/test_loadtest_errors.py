"""Failures are counted by kind and endpoint, with example URLs and messages; only timeouts
enter the latency figures (at their full wait)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from loadtest.runner import TargetUnreachable, run_load


async def test_http_500_counted_by_status(fake_marquee, config, workload):
    url, hits = await fake_marquee(status=500)
    res = await run_load(
        config(base_url=url, requests=30, rate=100.0, mix={"page": 1}), workload=workload
    )
    assert res["total"]["errors"] == {"http_500": 30}
    assert res["total"]["ok"] == 0 and res["total"]["latency_ms"] is None
    assert res["scenarios"]["page"]["error_rate"] == 1.0
    assert hits["page"] == 30


async def test_errors_name_the_method_endpoint_and_status_with_examples(
    fake_marquee, config, workload
):
    url, _ = await fake_marquee(status=503)
    cfg = config(base_url=url, requests=40, rate=200.0, mix={"page": 1, "history_recs": 1})
    res = await run_load(cfg, workload=workload)
    groups = {(g["method"], g["template"]): g for g in res["error_details"]}
    page = groups[("GET", "/movies/{id}")]
    recs = groups[("POST", "/v1/recommendations")]
    assert page["kind"] == "http_503" and page["status"] == 503 and page["scenario"] == "page"
    assert recs["scenario"] == "history_recs"
    assert page["count"] + recs["count"] == 40
    sample = page["samples"][0]
    assert sample["url"].startswith(f"{url}/movies/")
    assert sample["message"].startswith("HTTP 503:") and '"code": "x"' in sample["message"]
    assert 1 <= len(page["samples"]) <= 5


async def test_errors_attributed_to_their_scenario(serve, config, workload):
    """The web server fails (503) while the recommender answers: only `page` has errors."""

    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "down", "message": "down"}}, status=503)

    async def similar(request: web.Request) -> web.Response:
        return web.json_response({"items": []})

    web_app = web.Application()
    web_app.router.add_get("/movies/{id}", unavailable)
    rec_app = web.Application()
    rec_app.router.add_get("/v1/similar/{id}", similar)
    web_url, rec_url = await serve(web_app), await serve(rec_app)
    cfg = config(
        base_url=web_url,
        recommender_url=rec_url,
        requests=60,
        rate=200.0,
        mix={"page": 1, "similar": 1},
    )
    res = await run_load(cfg, workload=workload)
    page, similar = res["scenarios"]["page"], res["scenarios"]["similar"]
    assert page["ok"] == 0 and set(page["errors"]) == {"http_503"}
    assert similar["error_count"] == 0 and similar["ok"] > 0
    assert page["count"] + similar["count"] == 60


async def test_connection_reset_counted_as_connection(reset_server, config, workload):
    res = await run_load(
        config(base_url=reset_server, requests=10, rate=100.0, mix={"home": 1}), workload=workload
    )
    assert res["total"]["errors"] == {"connection": 10}


async def test_an_unreachable_target_fails_before_any_load(config, workload, closed_port):
    base = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(TargetUnreachable, match=f"cannot reach {base}: connection to .* refused"):
        await run_load(
            config(base_url=base, duration=60.0, rate=100.0, mix={"similar": 1}),
            workload=workload,
        )


async def test_an_unreachable_recommender_is_named(fake_marquee, config, workload, closed_port):
    url, hits = await fake_marquee()
    rec = f"http://127.0.0.1:{closed_port}"
    cfg = config(base_url=url, recommender_url=rec, rate=100.0, mix={"page": 1, "similar": 1})
    with pytest.raises(TargetUnreachable, match=f"cannot reach {rec}"):
        await run_load(cfg, workload=workload)
    assert sum(hits.values()) == 0


async def test_timeouts_counted_and_run_stays_bounded(serve, config, workload):
    """A server that never answers: every request times out and the run still ends on time."""
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/{tail:.*}", hang)
    url = await serve(app)
    cfg = config(base_url=url, rate=20.0, duration=0.5, timeout=0.3, mix={"home": 1})
    loop = asyncio.get_running_loop()
    start = loop.time()
    res = await run_load(cfg, workload=workload)
    assert loop.time() - start < 20.0  # send 0.5 s + one timeout, not the server's "forever"
    assert set(res["total"]["errors"]) == {"timeout"}
    assert res["total"]["errors"]["timeout"] == 10
    # each timeout is a latency sample of at least the timeout
    assert res["total"]["latency_samples"] == 10 and res["total"]["latency_ms"]["min"] >= 300.0
    (group,) = res["error_details"]
    assert group["template"] == "/" and "no response within 0.3 s" in group["samples"][0]["message"]


async def test_requests_waiting_for_a_connection_time_out_and_are_all_accounted_for(
    serve, config, workload
):
    """One connection, a 200 ms server, 50 req/s for 0.4 s: most arrivals wait in the client
    for the one connection and time out there (the timeout runs from when they were due); none
    is silently dropped."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response()

    app = web.Application()
    app.router.add_get("/", slow)
    url = await serve(app)
    cfg = config(base_url=url, rate=50.0, duration=0.4, timeout=0.5, connections=1, mix={"home": 1})
    res = await run_load(cfg, workload=workload)
    total = res["total"]
    assert total["count"] == 20  # every due arrival is accounted for
    assert total["ok"] >= 2 and total["errors"]["timeout"] > 0
    assert total["ok"] + total["errors"]["timeout"] == 20
    assert res["generator"]["connection_wait"]["requests"] > 0
    assert res["generator"]["unsent"] == 0  # the generator itself kept up
