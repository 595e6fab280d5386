"""Fixtures for the security tests: apps on real loopback sockets (development settings, where
demo logins work, and production ones, where only accounts do), a browser that keeps cookies,
reading the CSRF token and forms off rendered pages, and the forms' round trips."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from services.platform.settings import Settings
from tests.conftest import replace
from tests.web.conftest import Stack, stack_env, start_stack

SECRET = "test-secret-key-of-the-suite"  # the shared `settings` fixture's secrets
SERVICE_TOKEN = "test-service-token"
ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
async def web_base(settings: Settings, serve_app) -> str:
    """The monolith web server (every service in-process, real data, model and Redis)."""
    from web_server.app import create_app

    return await serve_app(create_app(replace(settings, mode="monolith")))


@pytest.fixture
async def production_base(settings: Settings, serve_app) -> str:
    """The monolith with production settings (no demo logins), a short session re-check."""
    from web_server.app import create_app

    app = create_app(replace(settings, mode="monolith", development=False, session_recheck=0.2))
    return await serve_app(app)


@pytest.fixture
def production_stack(
    tmp_path: Path, redis_url: str, model_dir: Path, catalog_db: Path
) -> Iterator[Stack]:
    """The microservices as real processes with production settings (no demo logins)."""
    env = {**stack_env(tmp_path, redis_url, model_dir, catalog_db), "MARQUEE_DEVELOPMENT": "false"}
    stack = start_stack(tmp_path, env)
    yield stack
    stack.stop()


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (the default jar ignores IP hosts)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def csrf_tokens(page: str) -> list[str]:
    return [html.unescape(v) for v in re.findall(r'name="csrf_token" value="([^"]*)"', page)]


def post_forms(page: str) -> list[str]:
    """The source of every form on the page that posts."""
    forms = re.findall(r"<form\b[^>]*>.*?</form>", page, flags=re.S | re.I)
    return [f for f in forms if re.search(r'method="post"', f, flags=re.I)]


async def get_page(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        assert resp.status == 200, (url, resp.status)
        return await resp.text()


async def log_in(session: aiohttp.ClientSession, base: str, user_id: int) -> None:
    """Log in through the real form (GET /login for a token, POST it)."""
    page = await get_page(session, f"{base}/login")
    form = {"csrf_token": csrf_tokens(page)[-1], "user_id": str(user_id), "next": "/"}
    async with session.post(f"{base}/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        assert "marquee_session" in resp.cookies


PASSWORD = "correct horse battery"


async def post_form(
    session: aiohttp.ClientSession, url: str, form: dict[str, str]
) -> tuple[int, str, aiohttp.ClientResponse]:
    """POST a form without following the redirect: (status, body, response)."""
    async with session.post(url, data=form, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp


async def join(
    session: aiohttp.ClientSession, base: str, name: str, password: str = PASSWORD
) -> None:
    """Make an account through the real join form; the session is then logged in."""
    page = await get_page(session, f"{base}/join")
    form = {"csrf_token": csrf_tokens(page)[-1], "name": name, "password": password}
    status, body, resp = await post_form(session, f"{base}/join", {**form, "confirm": password})
    assert status == 303, body
    assert "marquee_session" in resp.cookies


async def log_in_with_password(
    session: aiohttp.ClientSession, base: str, name: str, password: str
) -> tuple[int, str, aiohttp.ClientResponse]:
    """POST the log-in form's name and password (its CSRF token from GET /login)."""
    page = await get_page(session, f"{base}/login")
    form = {"csrf_token": csrf_tokens(page)[0], "name": name, "password": password, "next": "/"}
    return await post_form(session, f"{base}/login", form)


async def subscribe(session: aiohttp.ClientSession, base: str, plan: str) -> str:
    """Choose ``plan`` with the movie page's form; returns the page it leads back to."""
    page = await get_page(session, f"{base}/movies/1")
    start = page.index('action="/subscription"')
    form = {
        "csrf_token": csrf_tokens(page[start:])[0],
        "idempotency_key": re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1),
        "movie_id": "1",
        "action": "subscribe",
        "plan": plan,
    }
    async with session.post(f"{base}/subscription", data=form) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


async def log_out(session: aiohttp.ClientSession, base: str) -> None:
    page = await get_page(session, f"{base}/")
    status, body, _ = await post_form(
        session, f"{base}/logout", {"csrf_token": csrf_tokens(page)[0]}
    )
    assert status == 303, body


def session_cookie(session: aiohttp.ClientSession) -> str:
    [value] = [c.value for c in session.cookie_jar if c.key == "marquee_session"]
    return value
