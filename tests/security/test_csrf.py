"""CSRF: every form that posts carries a token bound to the visitor, and every POST without the
right one is refused with 403 and changes nothing."""

from __future__ import annotations

import re

import aiohttp
import redis.asyncio as redis_async

from recommender.batch import BatchKeys
from services.platform import auth
from tests.security.conftest import (
    SECRET,
    browser,
    csrf_tokens,
    get_page,
    log_in,
    post_forms,
)

USER = 41
OTHER = 42


async def _subscription(session: aiohttp.ClientSession, base: str, user_id: int) -> dict:
    """The user's subscription as the subscription API (in the monolith) tells it."""
    headers = {auth.SESSION_HEADER: auth.session_token(user_id, SECRET)}
    async with session.get(f"{base}/v1/users/{user_id}/subscription", headers=headers) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_every_post_form_on_every_page_carries_a_token(web_base):
    async with browser() as session:
        anonymous = [await get_page(session, f"{web_base}{p}") for p in ("/", "/login", "/join")]
        await log_in(session, web_base, USER)
        pages = [
            await get_page(session, f"{web_base}{p}")
            for p in ("/", "/movies/1", "/search?q=toy", "/batch", "/login")
        ]
    forms = [f for page in [*anonymous, *pages] for f in post_forms(page)]
    actions = {re.search(r'action="([^"]+)"', f).group(1) for f in forms}
    assert {"/login", "/join", "/logout", "/subscription", "/batch"} <= actions
    for form in forms:
        [token] = csrf_tokens(form)
        assert token.count(".") >= 2, form


async def test_login_without_or_with_a_wrong_token_is_refused(web_base):
    async with browser() as session:
        page = await get_page(session, f"{web_base}/login")
        good = csrf_tokens(page)[0]
        forged = auth.sign(good.rsplit(".", 2)[0], "not-the-secret", purpose="csrf")
        as_session = auth.session_token(USER, SECRET)  # a token for another purpose
        for token in (None, "", "garbage", good[:-2] + "xx", forged, as_session):
            form = {"user_id": str(USER), "next": "/"}
            if token is not None:
                form["csrf_token"] = token
            async with session.post(f"{web_base}/login", data=form, allow_redirects=False) as r:
                assert r.status == 403, token
                assert "marquee_session" not in r.cookies
                assert "did not come from Marquee" in await r.text()
    # another visitor's token is no good either: it is bound to their anonymous cookie
    async with browser() as other:
        form = {"user_id": str(USER), "next": "/", "csrf_token": good}
        async with other.post(f"{web_base}/login", data=form, allow_redirects=False) as r:
            assert r.status == 403


async def test_join_without_the_token_is_refused_and_makes_no_account(web_base):
    async with browser() as session:
        await get_page(session, f"{web_base}/join")  # the anonymous cookie, but no token sent
        form = {"name": "mallory", "password": "p" * 12, "confirm": "p" * 12, "next": "/"}
        async with session.post(f"{web_base}/join", data=form, allow_redirects=False) as r:
            assert r.status == 403
            assert "marquee_session" not in r.cookies
        page = await get_page(session, f"{web_base}/login")
        form = {"csrf_token": csrf_tokens(page)[0], "name": "mallory", "password": "p" * 12}
        async with session.post(f"{web_base}/login", data=form, allow_redirects=False) as r:
            assert r.status == 401, "no account was made"


async def test_logout_needs_the_token(web_base):
    async with browser() as session:
        await log_in(session, web_base, USER)
        async with session.post(f"{web_base}/logout", data={}, allow_redirects=False) as r:
            assert r.status == 403
            assert "marquee_session" not in r.cookies  # not deleted
        assert "Log out" in await get_page(session, f"{web_base}/")  # still logged in


async def test_subscription_form_needs_this_users_token(web_base, http):
    async with browser() as session:
        await log_in(session, web_base, USER)
        page = await get_page(session, f"{web_base}/movies/1")
        key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
        other_users_token = auth.sign(f"user:{OTHER}", SECRET, purpose="csrf")
        anon_token = auth.sign("anon:" + "a" * 24, SECRET, purpose="csrf")
        for token in (None, "x.1.y", other_users_token, anon_token):
            form = {
                "action": "subscribe",
                "plan": "premium",
                "idempotency_key": key,
                "movie_id": "1",
            }
            if token is not None:
                form["csrf_token"] = token
            async with session.post(
                f"{web_base}/subscription", data=form, allow_redirects=False
            ) as r:
                assert r.status == 403, token
        assert (await _subscription(http, web_base, USER))["status"] == "none"

        # and with the page's own token it works
        form["csrf_token"] = csrf_tokens(page)[-1]
        async with session.post(f"{web_base}/subscription", data=form, allow_redirects=False) as r:
            assert r.status == 303
    assert (await _subscription(http, web_base, USER))["plan"]["id"] == "premium"


async def test_batch_upload_needs_the_token(web_base, settings):
    client = redis_async.Redis.from_url(settings.redis_url)
    try:
        async with browser() as session:
            await log_in(session, web_base, USER)
            data = aiohttp.FormData()
            data.add_field("k", "5")
            data.add_field("file", b"movie_id\n1\n2\n", filename="m.csv", content_type="text/csv")
            async with session.post(f"{web_base}/batch", data=data, allow_redirects=False) as r:
                assert r.status == 403
            page = await get_page(session, f"{web_base}/batch")
            assert not re.findall(r'href="/batch/[0-9a-f]{8,}', page)  # no job listed
        keys = BatchKeys.of(settings)
        assert await client.keys(keys.job("*")) == []  # no job stored
        assert await client.keys(keys.owner("*")) == []
        assert await client.xlen(keys.stream) == 0  # nothing queued
    finally:
        await client.aclose()


async def test_a_cross_site_post_without_cookies_is_refused(web_base):
    """What a forged form on another site sends: no token it could read, no anon cookie."""
    async with aiohttp.ClientSession() as attacker:
        form = {"user_id": "1", "next": "/", "csrf_token": "stolen.0.mac"}
        async with attacker.post(f"{web_base}/login", data=form, allow_redirects=False) as r:
            assert r.status == 403
