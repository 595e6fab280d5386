"""Overload: past its in-flight limit the web server sheds new requests at once (503 with
Retry-After, counted) instead of queueing them until they time out, and serves again as soon as
the requests in progress finish."""

from __future__ import annotations

import asyncio

from tests.support import GENEROUS, async_wait_until
from tests.web.conftest import stub_settings
from tests.web.helpers import browser

HTML = {"Accept": "text/html,application/xhtml+xml"}


async def test_past_its_limit_the_web_server_sheds_at_once(stub_backends, serve, tmp_path):
    release = asyncio.Event()

    async def hold_movies(path: str) -> None:
        if path.startswith("/v1/movies/"):
            await release.wait()

    stub_backends.catalog.hold = hold_movies
    base = await serve(stub_settings(tmp_path, stub_backends, max_inflight=2, **GENEROUS))
    async with browser() as session:

        async def page(movie_id: int) -> int:
            async with session.get(f"{base}/movies/{movie_id}") as resp:
                await resp.read()
                return resp.status

        busy = [asyncio.create_task(page(m)) for m in (1, 2)]

        async def both_in_progress() -> bool:
            return len(stub_backends.catalog.calls) >= 2

        await async_wait_until(both_in_progress, 30, "two pages in progress")
        async with session.get(f"{base}/movies/3", headers=HTML) as resp:
            body = await resp.text()
            assert (resp.status, resp.headers["Retry-After"]) == (503, "1")
            assert resp.content_type == "text/html" and "try again" in body
        async with session.get(f"{base}/api/pages/movies/3") as resp:
            assert resp.status == 503 and "Retry-After" in resp.headers
            assert (await resp.json())["error"]["code"] == "overloaded"
        async with session.get(f"{base}/healthz") as resp:
            assert resp.status == 200  # probes are never shed
        release.set()
        assert await asyncio.gather(*busy) == [200, 200]
        assert await page(3) == 200
        async with session.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
    assert "marquee_requests_shed_total 2.0" in metrics
    assert 'marquee_http_requests_total{method="GET",route="/movies/{id}",status="503"} 1.0' in (
        metrics
    )


async def test_a_catalog_outage_page_says_when_to_retry(stub_backends, serve, tmp_path):
    stub_backends.catalog.mode = "error500"
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser() as session:
        for path in ("/movies/1", "/api/pages/movies/1"):
            async with session.get(base + path) as resp:
                assert resp.status == 503, path
                assert int(resp.headers["Retry-After"]) > 0, path
