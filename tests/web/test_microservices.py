"""The microservices deployment with real processes: four services on free loopback ports."""

from __future__ import annotations

import html

from tests.web.helpers import browser, field, timed_get


async def test_movie_page_over_real_services(microservices_stack):
    stack = microservices_stack
    async with browser() as session:
        async with session.get(f"{stack.web_url}/readyz") as resp:
            assert resp.status == 200
        _, status, page = await timed_get(session, f"{stack.web_url}/movies/1")
        assert status == 200, stack.processes["web"].log_tail()
        assert "Toy Story" in page and "(1995)" in page and "More like this" in page
        async with session.get(f"{stack.web_url}/api/pages/movies/1") as resp:
            data = await resp.json()
            timing = resp.headers["Server-Timing"]
    assert data["degraded"] == []
    assert len(data["similar"]["items"]) >= 8
    assert all(html.escape(item["title"]) in page for item in data["similar"]["items"][:8])
    for backend in ("catalog", "recommender", "catalog_batch"):
        assert f"{backend};dur=" in timing

    # Logged in, over HTTP: the session token goes to the subscription service with each call.
    async with browser() as session:
        _, _, login_page = await timed_get(session, f"{stack.web_url}/login")
        form = {"csrf_token": field(login_page, "csrf_token"), "user_id": "42", "next": "/movies/1"}
        async with session.post(f"{stack.web_url}/login", data=form) as resp:
            page = await resp.text()
        assert "Choose a plan" in page
        start = page.index('action="/subscription"')
        sub = {
            "csrf_token": field(page[start:], "csrf_token"),
            "idempotency_key": field(page[start:], "idempotency_key"),
            "movie_id": "1",
            "action": "subscribe",
            "plan": "premium",
        }
        async with session.post(f"{stack.web_url}/subscription", data=sub) as resp:
            assert resp.status == 200 and "Your plan: Premium" in await resp.text()


async def test_a_stopped_recommender_degrades_the_page(microservices_stack):
    stack = microservices_stack
    stack.processes["recommender"].stop()
    async with browser() as session:
        async with session.get(f"{stack.web_url}/readyz") as resp:
            assert resp.status == 200  # the web server itself is ready; the page degrades
        async with session.get(f"{stack.web_url}/api/pages/movies/1") as resp:
            data = await resp.json()
    assert resp.status == 200
    assert data["similar"]["source"] == "fallback" and "similar" in data["degraded"]
    assert len(data["similar"]["items"]) >= 8
