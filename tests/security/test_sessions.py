"""Session cookies: signed (a tampered, forged or expired one is simply anonymous), HttpOnly,
SameSite=Lax, path /; logging out deletes it."""

from __future__ import annotations

import time

import aiohttp

from services.platform import auth
from tests.conftest import replace
from tests.security.conftest import SECRET, browser, csrf_tokens, get_page, log_in

USER = 51


async def _viewer(base: str, cookie: str | None) -> str:
    """Who the web server thinks the visitor is: the plan section of the composed page."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        if cookie is not None:
            session.cookie_jar.update_cookies({"marquee_session": cookie})
        page = await get_page(session, f"{base}/")
    return "user" if "Log out" in page else "anonymous"


async def test_login_sets_a_signed_httponly_samesite_cookie(web_base):
    async with browser() as session:
        page = await get_page(session, f"{web_base}/login")
        form = {"csrf_token": csrf_tokens(page)[0], "user_id": str(USER), "next": "/"}
        async with session.post(f"{web_base}/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 303
            cookie = resp.cookies["marquee_session"]
            raw = resp.headers.getall("Set-Cookie")
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert auth.session_user(cookie.value, SECRET, 3600) == USER
    assert auth.session_claims(cookie.value, SECRET, 3600) == (USER, 0)  # user, generation
    assert cookie.value != str(USER) and cookie.value.count(".") == 3
    [header] = [h for h in raw if h.startswith("marquee_session=")]
    assert "HttpOnly" in header and "SameSite=Lax" in header
    assert await _viewer(web_base, cookie.value) == "user"


async def test_anonymous_csrf_cookie_is_httponly_and_lax(web_base):
    async with browser() as session, session.get(f"{web_base}/login") as resp:
        cookie = resp.cookies["marquee_anon"]
    assert cookie["httponly"] is True and cookie["samesite"] == "Lax"


async def test_tampered_forged_or_expired_cookies_are_anonymous(web_base):
    good = auth.session_token(USER, SECRET)
    _, generation, issued, mac = good.split(".")
    tampered = f"{USER + 1}.{generation}.{issued}.{mac}"  # another user id under the same mac
    newer = f"{USER}.{int(generation) + 1}.{issued}.{mac}"  # a generation it was not made in
    before_accounts = auth.sign(str(USER), SECRET, purpose="session")  # <user>.<issued>.<mac>
    forged = auth.session_token(USER, "guessed-secret")
    csrf_as_session = auth.sign(str(USER), SECRET, purpose="csrf")  # right key, wrong purpose
    expired = auth.sign(f"{USER}.0", SECRET, purpose="session", now=time.time() - 31 * 24 * 3600)
    cookies = (tampered, newer, before_accounts, forged, csrf_as_session, expired)
    for cookie in (*cookies, "1", "", "a.b.c", "x" * 4000):
        assert await _viewer(web_base, cookie) == "anonymous", cookie[:40]
    assert await _viewer(web_base, good) == "user"


async def test_a_forged_cookie_cannot_read_a_plan_through_the_page_api(web_base, http):
    forged = f"{USER}.{int(time.time())}.AAAA"
    async with http.get(
        f"{web_base}/api/pages/movies/1", cookies={"marquee_session": forged}
    ) as resp:
        page = await resp.json()
    assert page["plan"] == {
        "user_id": None,
        "status": "anonymous",
        "plan": None,
        "updated_at": None,
    }


async def test_logout_deletes_the_cookie(web_base):
    async with browser() as session:
        await log_in(session, web_base, USER)
        page = await get_page(session, f"{web_base}/")
        form = {"csrf_token": csrf_tokens(page)[0]}
        async with session.post(f"{web_base}/logout", data=form, allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.cookies["marquee_session"].value == ""
        assert "Log out" not in await get_page(session, f"{web_base}/")


async def test_cookies_are_secure_when_tls_ends_in_front(settings, serve_app):
    """Issue 18.8: behind a TLS-terminating proxy the request is plain HTTP, yet the session and
    CSRF cookies must never travel without TLS."""
    from web_server.app import create_app

    base = await serve_app(create_app(replace(settings, mode="monolith", secure_cookies=True)))
    async with browser() as session, session.get(f"{base}/login") as resp:
        assert resp.status == 200
        cookies = resp.headers.getall("Set-Cookie")
    assert cookies and all("Secure" in c for c in cookies), cookies
