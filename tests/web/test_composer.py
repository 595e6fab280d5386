"""The composer against stub backends over real HTTP: fan-out, deadlines, fallbacks, errors."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from tests.support import GENEROUS, async_wait_until, free_port
from tests.web import stubs
from tests.web.conftest import SHORT, stub_settings
from tests.web.helpers import Rendezvous, browser, timed_get


async def test_three_backends_are_called_at_once(stub_backends, serve, tmp_path):
    """Each backend answers only once all three calls have arrived: made one after another, the
    first would wait for the others until its deadline and the page would fail or degrade."""
    meeting = Rendezvous("catalog", "subscription", "recommender")
    stub_backends.catalog.hold = meeting.hold("catalog", "/v1/movies/1")
    stub_backends.subscription.hold = meeting.hold("subscription", "/v1/users/7/subscription")
    stub_backends.recommender.hold = meeting.hold("recommender", "/v1/similar/1")
    base = await serve(stub_settings(tmp_path, stub_backends, **GENEROUS))
    async with browser(user_id=7) as session, session.get(f"{base}/api/pages/movies/1") as resp:
        page = await resp.json()
    assert resp.status == 200, page
    assert page["degraded"] == []
    assert page["similar"]["source"] == "model" and page["plan"]["status"] == "none"
    assert meeting.met == 1


async def test_titles_lookup_does_not_wait_behind_the_movie(stub_backends, serve, tmp_path):
    """The critical path is max(catalog, subscription, recommender + titles), not the sum: the
    movie and the plan answer only once the titles batch (chained onto the recommender's answer)
    has arrived, which can only happen if that chain never waits for them."""
    titles_asked = asyncio.Event()

    async def titles_first(path: str) -> None:
        if path == "/v1/movies":
            titles_asked.set()
        elif path.startswith(("/v1/movies/", "/v1/users/")):
            await titles_asked.wait()

    stub_backends.catalog.hold = stub_backends.subscription.hold = titles_first
    base = await serve(stub_settings(tmp_path, stub_backends, **GENEROUS))
    async with browser(user_id=7) as session, session.get(f"{base}/api/pages/movies/1") as resp:
        page = await resp.json()
    assert resp.status == 200, page
    assert page["degraded"] == [] and page["similar"]["source"] == "model"
    assert titles_asked.is_set()


async def test_slow_recommender_costs_only_its_deadline(stub_backends, serve, tmp_path):
    """A recommender that never answers (until the test ends): the page still comes, with the
    popular-in-genre row marked degraded, and says the call timed out."""
    stub_backends.recommender.delay = 3600
    settings = stub_settings(tmp_path, stub_backends, recommender_timeout=SHORT, page_budget=1.0)
    base = await serve(settings)
    patience = aiohttp.ClientTimeout(total=10 * settings.page_budget)
    async with browser() as session:
        async with session.get(f"{base}/movies/1", timeout=patience) as resp:
            body = await resp.text()
        assert resp.status == 200
        assert "recommendations are unavailable right now" in body
        assert "Showing popular Animation movies" in body
        async with session.get(f"{base}/api/pages/movies/1", timeout=patience) as resp:
            page = await resp.json()
            timing = resp.headers["Server-Timing"]
    assert resp.status == 200
    assert re.search(r'recommender;dur=[0-9.]+;desc="(timeout|circuit_open)"', timing), timing
    assert page["similar"]["source"] == "fallback"
    assert "similar" in page["degraded"]
    ids = [item["movie_id"] for item in page["similar"]["items"]]
    assert ids and 1 not in ids
    assert all("Animation" in item["genres"] for item in page["similar"]["items"])


async def test_subscription_failure_shows_join_and_marks_plan_degraded(
    stub_backends, serve, tmp_path
):
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser(user_id=3) as session:
        for mode in ("error500", "garbage"):
            stub_backends.subscription.mode = mode
            _, status, body = await timed_get(session, f"{base}/movies/1")
            assert status == 200, mode
            assert "Join Marquee" in body and 'href="/login?next=/movies/1"' in body
            async with session.get(f"{base}/api/pages/movies/1") as resp:
                page = await resp.json()
            assert resp.status == 200
            assert "plan" in page["degraded"], mode
            assert page["plan"]["status"] == "unavailable"
            assert page["similar"]["source"] == "model"


async def test_catalog_down_is_a_503_page_and_json(stub_backends, serve, tmp_path):
    settings = stub_settings(tmp_path, stub_backends, catalog_url=f"http://127.0.0.1:{free_port()}")
    base = await serve(settings)
    async with browser() as session:
        async with session.get(f"{base}/movies/1") as resp:
            body = await resp.text()
            assert resp.status == 503
            assert resp.content_type == "text/html"
            assert "catalog is unavailable" in body and "Traceback" not in body
            assert "catalog;dur=" in resp.headers["Server-Timing"]
        async with session.get(f"{base}/api/pages/movies/1") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "catalog_unavailable"


async def test_unknown_and_bad_ids(stub_backends, serve, tmp_path):
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser() as session:
        for path, status in (
            ("/movies/99999", 404),
            ("/movies/abc", 400),
            ("/movies/0", 400),
            ("/no/such/page", 404),
        ):
            async with session.get(base + path) as resp:
                assert resp.status == status, path
                assert resp.content_type == "text/html", path
        for path, status, code in (
            ("/api/pages/movies/99999", 404, "unknown_movie"),
            ("/api/pages/movies/abc", 400, "invalid_id"),
        ):
            async with session.get(base + path) as resp:
                assert resp.status == status
                assert (await resp.json())["error"]["code"] == code


async def test_server_timing_and_request_id_flow_out(stub_backends, serve, tmp_path):
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser(user_id=5) as session:
        headers = {"X-Request-ID": "trace-me-123"}
        async with session.get(f"{base}/movies/1", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["X-Request-ID"] == "trace-me-123"
            # The HTML page is streamed: its headers leave once the movie is known.
            assert re.search(r'catalog;dur=[0-9.]+;desc="ok"', resp.headers["Server-Timing"])
        async with session.get(f"{base}/api/pages/movies/1", headers=headers) as resp:
            assert resp.status == 200
            timing = resp.headers["Server-Timing"]
    for backend in ("catalog", "subscription", "recommender", "catalog_batch"):
        assert re.search(rf'{backend};dur=[0-9.]+;desc="ok"', timing), timing
    for behaviour in (stub_backends.catalog, stub_backends.subscription, stub_backends.recommender):
        assert "trace-me-123" in behaviour.request_ids


async def test_anonymous_viewer_costs_no_subscription_call(stub_backends, serve, tmp_path):
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser() as session:
        _, status, body = await timed_get(session, f"{base}/movies/1")
    assert status == 200 and "Join Marquee" in body
    assert stub_backends.subscription.calls == []


async def test_titles_and_tags_are_escaped(stub_backends, serve, tmp_path):
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser() as session:
        _, status, body = await timed_get(session, f"{base}/movies/666")
        assert status == 200
        assert "<script>alert" not in body and "<img src=x" not in body
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Evil" in body
        assert "&lt;img src=x onerror=alert(1)&gt;" in body
        _, _, body = await timed_get(session, f"{base}/search?q=evil")
        assert "<script>alert" not in body and "&lt;script&gt;" in body


async def test_pages_render_against_stubs(stub_backends, serve, tmp_path):
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser(user_id=2) as session:
        _, status, body = await timed_get(session, f"{base}/")
        assert status == 200 and "Popular now" in body and "For you" in body
        _, status, body = await timed_get(session, f"{base}/search?q=toy")
        assert status == 200 and "Toy Story" in body
        _, status, body = await timed_get(session, f"{base}/search?q=zzzz")
        assert status == 200 and "No movies match" in body
        _, status, body = await timed_get(session, f"{base}/search")
        assert status == 200 and "Type part of a title" in body
        _, status, _ = await timed_get(session, f"{base}/search?page=x")
        assert status == 400
        async with session.get(f"{base}/static/style.css") as resp:
            assert resp.status == 200
    assert stubs.MOVIES[1]["title"] == "Toy Story"


async def test_slow_subscription_costs_only_its_deadline_and_is_counted(
    stub_backends, serve, tmp_path
):
    stub_backends.subscription.delay = 3600
    settings = stub_settings(tmp_path, stub_backends, subscription_timeout=SHORT, page_budget=1.0)
    base = await serve(settings)
    patience = aiohttp.ClientTimeout(total=10 * settings.page_budget)
    async with browser(user_id=9) as session:
        for _ in range(2):
            async with session.get(f"{base}/api/pages/movies/1", timeout=patience) as resp:
                page = await resp.json()
                assert resp.status == 200
        async with session.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
    assert page["degraded"] == ["plan"] and page["similar"]["source"] == "model"
    assert 'marquee_fallbacks_total{fragment="plan",reason="timeout"} 2.0' in metrics


async def test_a_page_failing_while_it_probes_the_recommender_leaves_the_circuit_usable(
    stub_backends, serve, tmp_path
):
    """Issue 18.1: a page that fails on the catalog cancels its similar-row call; when that call
    carried the half-open probe, later pages must still probe and recover, not stay degraded."""
    stub_backends.recommender.delay = 3600  # stalled
    settings = stub_settings(
        tmp_path, stub_backends, breaker_failures=1, recommender_timeout=SHORT, page_budget=1.0
    )
    base = await serve(settings)
    async with browser() as session:
        async with session.get(f"{base}/api/pages/movies/1") as resp:
            assert (await resp.json())["similar"]["source"] == "fallback"  # the circuit opens

        async def probe_cancelled() -> bool:
            async with session.get(f"{base}/api/pages/movies/99999") as resp:
                assert resp.status == 404
                timing = resp.headers["Server-Timing"]
            return bool(re.search(r'recommender;dur=[0-9.]+;desc="cancelled"', timing))

        await async_wait_until(probe_cancelled, 30, "a half-open probe cancelled by a 404 page")
        stub_backends.recommender.delay = 0
        stub_backends.recommender.release.set()  # the recommender is back

        async def recovered() -> bool:
            async with session.get(f"{base}/api/pages/movies/1") as resp:
                return (await resp.json())["similar"]["source"] == "model"

        await async_wait_until(recovered, 10 * settings.breaker_reset + 10, "pages to recover")
