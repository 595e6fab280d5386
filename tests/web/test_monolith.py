"""The monolith end to end: one process hosting every service, real data, real model, real Redis."""

from __future__ import annotations

import html
import re

import pytest

from services.platform import auth
from tests.web.helpers import browser, field, timed_get

SECRET = "test-secret-key-of-the-suite"  # the shared `settings` fixture's secret_key


@pytest.fixture
async def base(serve, settings) -> str:
    return await serve(settings)


async def login(session, base: str, user_id: int) -> None:
    _, status, page = await timed_get(session, f"{base}/login?next=/movies/1")
    assert status == 200
    form = {
        "csrf_token": field(page, "csrf_token", 0 if "Log out" not in page else 1),
        "user_id": str(user_id),
        "next": "/movies/1",
    }
    async with session.post(f"{base}/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/movies/1"
        cookie = resp.cookies["marquee_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
        assert not cookie["secure"]


def plan_form(page: str) -> dict:
    """The first subscription form on the page (subscribe or change)."""
    start = page.index('action="/subscription"')
    form = page[start:]
    return {
        "csrf_token": field(form, "csrf_token"),
        "idempotency_key": field(form, "idempotency_key"),
        "movie_id": field(form, "movie_id"),
        "action": field(form, "action"),
    }


async def post_plan(session, base: str, form: dict) -> int:
    async with session.post(f"{base}/subscription", data=form, allow_redirects=False) as resp:
        if resp.status == 303:
            assert resp.headers["Location"] == "/movies/1"
        return resp.status


async def movie_page(session, base: str) -> str:
    _, status, page = await timed_get(session, f"{base}/movies/1")
    assert status == 200
    return page


async def test_movie_page_end_to_end(base):
    async with browser() as session:
        async with session.get(f"{base}/movies/1") as resp:
            page = await resp.text()
            assert resp.status == 200
            timing = resp.headers["Server-Timing"]
        async with session.get(f"{base}/api/pages/movies/1") as resp:
            data = await resp.json()
            assert resp.status == 200
            assert "recommender;dur=" in resp.headers["Server-Timing"]
        async with session.get(f"{base}/v1/movies/1") as resp:  # the catalog API, same process
            assert resp.status == 200
    assert "Toy Story" in page and "(1995)" in page
    for genre in ("Adventure", "Animation", "Children", "Comedy", "Fantasy"):
        assert genre in page
    assert "Join Marquee" in page
    assert "https://www.imdb.com/title/tt0114709/" in page
    assert "https://www.themoviedb.org/movie/862" in page
    assert re.search(r'catalog;dur=[0-9.]+;desc="ok"', timing)

    assert set(data) == {"movie", "plan", "similar", "degraded", "timings"}
    assert data["movie"]["title"] == "Toy Story" and data["movie"]["year"] == 1995
    assert data["plan"]["status"] == "anonymous"
    assert data["degraded"] == []
    assert data["similar"]["source"] in ("collaborative", "cache")
    items = data["similar"]["items"]
    assert len(items) >= 8
    assert all(set(i) == {"movie_id", "title", "year", "genres", "score"} for i in items)
    assert 1 not in [i["movie_id"] for i in items]
    titles_on_page = [i["title"] for i in items if html.escape(i["title"]) in page]
    assert len(titles_on_page) >= 8
    assert {"catalog", "recommender", "catalog_batch"} <= set(data["timings"])


async def test_subscribe_change_cancel(base):
    async with browser() as session:
        await login(session, base, 1)
        page = await movie_page(session, base)
        assert "User 1" in page and "Choose a plan" in page
        form = plan_form(page)
        assert form["action"] == "subscribe"
        assert await post_plan(session, base, {**form, "plan": "standard"}) == 303
        page = await movie_page(session, base)
        assert "Your plan: Standard" in page

        change = plan_form(page)
        assert change["action"] == "change"
        assert await post_plan(session, base, {**change, "plan": "basic"}) == 303
        assert "Your plan: Basic" in await movie_page(session, base)
        page = await movie_page(session, base)
        assert await post_plan(session, base, {**plan_form(page), "plan": "premium"}) == 303
        assert "Your plan: Premium" in await movie_page(session, base)
        # The first change form submitted again (double submit): it does not apply twice.
        assert await post_plan(session, base, {**change, "plan": "basic"}) == 303
        page = await movie_page(session, base)
        assert "Your plan: Premium" in page

        cancel = page[page.index('value="cancel"') - 600 :]
        form = {
            "csrf_token": field(cancel, "csrf_token"),
            "idempotency_key": field(cancel, "idempotency_key"),
            "movie_id": "1",
            "action": "cancel",
        }
        assert await post_plan(session, base, form) == 303
        page = await movie_page(session, base)
        assert "Choose a plan" in page and "Your plan:" not in page


async def test_csrf_is_required_and_nothing_changes(base):
    async with browser() as session:
        await login(session, base, 1)
        form = {**plan_form(await movie_page(session, base)), "plan": "premium"}
        for token in (
            None,
            "",
            "garbage",
            auth.sign("user:2", SECRET, purpose="csrf"),
            auth.sign("user:1", "wrong-secret", purpose="csrf"),
            auth.sign("user:1", SECRET, purpose="session"),
        ):
            data = {k: v for k, v in form.items() if k != "csrf_token"}
            if token is not None:
                data["csrf_token"] = token
            async with session.post(
                f"{base}/subscription", data=data, allow_redirects=False
            ) as resp:
                assert resp.status == 403, token
                assert resp.content_type == "text/html"
        assert "Choose a plan" in await movie_page(session, base)
        async with session.post(f"{base}/logout", data={}, allow_redirects=False) as resp:
            assert resp.status == 403
        assert "User 1" in await movie_page(session, base)


async def test_a_user_only_ever_changes_their_own_plan(base):
    async with browser() as one, browser() as two:
        await login(one, base, 1)
        await login(two, base, 2)
        form = plan_form(await movie_page(two, base))
        # Extra fields naming another user are ignored: the session decides whose plan it is.
        assert await post_plan(two, base, {**form, "plan": "premium", "user_id": "1"}) == 303
        assert "Your plan: Premium" in await movie_page(two, base)
        assert "Choose a plan" in await movie_page(one, base)
        # User 2's form (and CSRF token) replayed in user 1's session is refused.
        form = plan_form(await movie_page(two, base))
        assert await post_plan(one, base, {**form, "plan": "basic"}) == 403
        assert "Choose a plan" in await movie_page(one, base)

    forged = auth.session_token(1, "not-the-secret")
    async with browser() as session:
        session.cookie_jar.update_cookies({"marquee_session": forged})
        page = await movie_page(session, base)
        assert "Join Marquee" in page and "User 1" not in page
        async with session.get(f"{base}/api/pages/movies/1") as resp:
            assert (await resp.json())["plan"]["status"] == "anonymous"
        data = {
            "csrf_token": auth.sign("user:1", "not-the-secret", purpose="csrf"),
            "idempotency_key": "a" * 32,
            "movie_id": "1",
            "action": "subscribe",
            "plan": "basic",
        }
        assert await post_plan(session, base, data) == 403


async def test_login_validation_and_logout(base):
    async with browser() as session:
        _, _, page = await timed_get(session, f"{base}/login")
        token = field(page, "csrf_token")
        for bad in ("abc", "0", "-3", "", "1.5", "99999999999"):
            async with session.post(
                f"{base}/login", data={"csrf_token": token, "user_id": bad}, allow_redirects=False
            ) as resp:
                body = await resp.text()
                assert resp.status == 400, bad
                assert "Enter your MovieLens user id" in body
        async with session.post(
            f"{base}/login", data={"user_id": "1"}, allow_redirects=False
        ) as resp:
            assert resp.status == 403
        await login(session, base, 1)
        page = await movie_page(session, base)
        logout_token = field(page, "csrf_token")
        async with session.post(
            f"{base}/logout", data={"csrf_token": logout_token}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
        page = await movie_page(session, base)
        assert "Join Marquee" in page and "User 1" not in page


async def test_home_and_search(base):
    async with browser() as session:
        await login(session, base, 1)
        _, status, page = await timed_get(session, f"{base}/")
        assert status == 200
        assert "Popular now" in page and "For you" in page and "Comedy" in page
        _, status, page = await timed_get(session, f"{base}/search?q=toy+story")
        assert status == 200 and "Toy Story" in page
        _, status, page = await timed_get(session, f"{base}/search?genre=Animation&page=2")
        assert status == 200 and "Page 2 of" in page
    async with browser() as session, session.get(f"{base}/openapi.json") as resp:
        paths = (await resp.json())["paths"]
    assert "/api/pages/movies/{id}" in paths and "/movies/{id}" in paths
    assert "/v1/movies/{movie_id}" in paths or any(p.startswith("/v1/") for p in paths)
