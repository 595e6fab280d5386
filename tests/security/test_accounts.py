"""Issue 18.2, logging in as anyone: with production settings a visitor is only who their
password proves; failed log-ins are limited; logging out ends the session everywhere, also the
copy of the cookie somebody kept; demo logins (a MovieLens id alone) only in development."""

from __future__ import annotations

import re

import aiohttp

from services.platform.auth import SESSION_HEADER
from tests.conftest import replace
from tests.security.conftest import (
    PASSWORD,
    browser,
    csrf_tokens,
    get_page,
    join,
    log_in,
    log_in_with_password,
    log_out,
    post_form,
    session_cookie,
    subscribe,
)
from tests.support import async_wait_until

VICTIM = 5  # a MovieLens user id


async def who(base: str, cookie: str) -> str:
    """Who the page header says is logged in with this cookie alone ("" for nobody)."""
    async with browser() as session:
        session.cookie_jar.update_cookies({"marquee_session": cookie})
        page = await get_page(session, f"{base}/")
    found = re.search(r'aria-label="Logged in as ([^"]+)"', page)
    return found.group(1) if found else ""


async def test_logging_in_as_another_user_by_id_is_refused_in_production(production_base):
    async with browser() as session:
        page = await get_page(session, f"{production_base}/login")
        assert 'name="user_id"' not in page, "no demo form in production"
        form = {"csrf_token": csrf_tokens(page)[0], "user_id": str(VICTIM), "next": "/"}
        status, body, resp = await post_form(session, f"{production_base}/login", form)
        assert status == 403 and "demo logins are off" in body
        assert "marquee_session" not in resp.cookies
        assert "Log out" not in await get_page(session, f"{production_base}/")


async def test_logging_in_as_another_account_needs_its_password(production_base):
    async with browser() as alice:
        await join(alice, production_base, "alice")
    async with browser() as mallory:
        status, body, resp = await log_in_with_password(
            mallory, production_base, "alice", "not her password"
        )
        assert status == 401 and "wrong name or password" in body
        assert "marquee_session" not in resp.cookies
        assert await who(production_base, "") == ""
        status, _, resp = await log_in_with_password(mallory, production_base, "Alice", PASSWORD)
        assert status == 303
        assert await who(production_base, resp.cookies["marquee_session"].value) == "alice"


async def test_brute_force_on_the_login_form_gets_429_after_five_failures(production_base):
    async with browser() as alice:
        await join(alice, production_base, "alice")
    statuses = []
    async with browser() as mallory:
        for i in range(6):
            status, body, resp = await log_in_with_password(
                mallory, production_base, "alice", f"guess number {i}"
            )
            statuses.append(status)
        assert statuses == [401] * 5 + [429]
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert "too many failed log-ins" in body and 'role="alert"' in body
        status, _, _ = await log_in_with_password(mallory, production_base, "alice", PASSWORD)
        assert status == 429, "the right password waits too: a guesser learns nothing"


async def test_a_registered_user_subscribes_logs_out_and_logs_back_in(production_base):
    async with browser() as session:
        await join(session, production_base, "grace")
        assert "Your plan: Standard" in await subscribe(session, production_base, "standard")
        await log_out(session, production_base)
        assert "Log out" not in await get_page(session, f"{production_base}/")
        status, _, _ = await log_in_with_password(session, production_base, "grace", PASSWORD)
        assert status == 303
        page = await get_page(session, f"{production_base}/movies/1")
        assert "Your plan: Standard" in page and "grace" in page


async def test_a_cookie_kept_from_before_logout_is_dead(production_base, http):
    """Someone copied the cookie (a shared computer, a stolen laptop): after the owner logs out
    it shows nobody, writes nothing, and the subscription API refuses it too."""
    async with browser() as session:
        await join(session, production_base, "ada")
        kept = session_cookie(session)
        assert await who(production_base, kept) == "ada"
        await log_out(session, production_base)
    assert await who(production_base, kept) == ""
    async with browser() as thief:
        thief.cookie_jar.update_cookies({"marquee_session": kept})
        assert "Choose a plan" not in await get_page(thief, f"{production_base}/movies/1")
        page = await get_page(thief, f"{production_base}/login")
        form = {"csrf_token": csrf_tokens(page)[0], "action": "cancel", "idempotency_key": "k" * 16}
        status, _, _ = await post_form(thief, f"{production_base}/subscription", form)
        assert status == 403
    user_id = kept.split(".")[0]
    async with http.get(
        f"{production_base}/v1/users/{user_id}/subscription", headers={SESSION_HEADER: kept}
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "session_ended"


async def test_a_logout_elsewhere_ends_the_cookie_here_within_the_recheck(production_base, http):
    """Logged out through the API (another device, another web process): this web server asks
    again after ``session_recheck`` (0.2 s here) and stops showing the user."""
    async with browser() as session:
        await join(session, production_base, "ada")
        cookie = session_cookie(session)
    assert await who(production_base, cookie) == "ada"
    async with http.delete(
        f"{production_base}/v1/sessions/current", headers={SESSION_HEADER: cookie}
    ) as resp:
        assert resp.status == 200

    async def logged_out() -> bool:
        return await who(production_base, cookie) == ""

    await async_wait_until(logged_out, 30, "the web server to see the logout")


async def test_the_login_page_offers_demo_logins_only_in_development(web_base, production_base):
    async with browser() as session:
        development = await get_page(session, f"{web_base}/login")
        production = await get_page(session, f"{production_base}/login")
    for page in (development, production):
        assert 'name="name"' in page and 'name="password"' in page and 'href="/join' in page
    assert 'name="user_id"' in development and "development only" in development
    assert 'name="user_id"' not in production


async def test_demo_logins_work_in_development(web_base):
    async with browser() as session:
        await log_in(session, web_base, VICTIM)
        assert await who(web_base, session_cookie(session)) == f"User {VICTIM}"


async def test_the_join_form_refuses_a_taken_name_a_bad_one_and_differing_passwords(
    production_base,
):
    async with browser() as first:
        await join(first, production_base, "ada")
    async with browser() as session:
        page = await get_page(session, f"{production_base}/join")
        token = csrf_tokens(page)[-1]
        cases = [
            ({"name": "ADA", "password": PASSWORD, "confirm": PASSWORD}, 409, "is taken"),
            ({"name": "a", "password": PASSWORD, "confirm": PASSWORD}, 400, "3 to 32"),
            ({"name": "bob", "password": "short", "confirm": "short"}, 400, "8 to 256"),
            ({"name": "bob", "password": PASSWORD, "confirm": PASSWORD + "!"}, 400, "not the same"),
        ]
        for form, status, message in cases:
            got, body, resp = await post_form(
                session, f"{production_base}/join", {"csrf_token": token, **form}
            )
            assert (got, message in body) == (status, True), form
            assert "marquee_session" not in resp.cookies
            assert PASSWORD not in body, "a password is never written back into the page"


async def test_behind_a_proxy_the_limit_keys_on_the_address_the_proxy_saw(settings, serve_app):
    """With one proxy in front (``forwarded_hops=1``) the visitor's address is the last
    X-Forwarded-For entry: made-up entries to its left do not give a guesser a fresh bucket."""
    from web_server.app import create_app

    base = await serve_app(
        create_app(replace(settings, mode="monolith", development=False, forwarded_hops=1))
    )

    async def attempt(session: aiohttp.ClientSession, forwarded: str, name: str) -> int:
        page = await get_page(session, f"{base}/login")
        form = {"csrf_token": csrf_tokens(page)[0], "name": name, "password": "guess-guess"}
        async with session.post(
            f"{base}/login",
            data=form,
            headers={"X-Forwarded-For": forwarded},
            allow_redirects=False,
        ) as resp:
            return resp.status

    async with browser() as session:
        for i in range(20):  # the per-address burst, a new name and a made-up entry each time
            assert await attempt(session, f"10.0.0.{i}, 198.51.100.7", f"name{i:02d}") == 401
        assert await attempt(session, "10.9.9.9, 198.51.100.7", "name-next") == 429
        assert await attempt(session, "198.51.100.8", "name-next") == 401  # another visitor


async def test_over_real_services_a_logged_out_cookie_is_refused_by_web_and_subscription(
    production_stack, http
):
    """Microservices, each a real process, production settings: join, subscribe, log out; the
    kept cookie is nobody at the web server and is refused by the subscription service itself;
    logging back in finds the plan; a demo login is refused."""
    stack = production_stack
    async with browser() as session:
        await join(session, stack.web_url, "ada")
        assert "Your plan: Premium" in await subscribe(session, stack.web_url, "premium")
        kept = session_cookie(session)
        await log_out(session, stack.web_url)
        assert await who(stack.web_url, kept) == ""
        url = f"{stack.subscription_url}/v1/users/{kept.split('.')[0]}/subscription"
        async with http.get(url, headers={SESSION_HEADER: kept}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "session_ended"
        headers = {SESSION_HEADER: kept, "Idempotency-Key": "after-logout"}
        async with http.delete(url, headers=headers) as resp:
            assert resp.status == 401
        status, _, _ = await log_in_with_password(session, stack.web_url, "ada", PASSWORD)
        assert status == 303
        assert "Your plan: Premium" in await get_page(session, f"{stack.web_url}/movies/1")
    async with browser() as mallory:
        page = await get_page(mallory, f"{stack.web_url}/login")
        form = {"csrf_token": csrf_tokens(page)[0], "user_id": str(VICTIM), "next": "/"}
        status, _, resp = await post_form(mallory, f"{stack.web_url}/login", form)
        assert status == 403 and "marquee_session" not in resp.cookies
