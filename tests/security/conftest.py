"""Fixtures for the security tests: apps on real loopback sockets, a browser that keeps cookies,
and reading the CSRF token and forms off rendered pages."""

from __future__ import annotations

import html
import re

import aiohttp
import pytest

from services.platform.settings import Settings
from tests.conftest import replace

SECRET = "test-secret-key-of-the-suite"  # the shared `settings` fixture's secrets
SERVICE_TOKEN = "test-service-token"
ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
async def web_base(settings: Settings, serve_app) -> str:
    """The monolith web server (every service in-process, real data, model and Redis)."""
    from web_server.app import create_app

    return await serve_app(create_app(replace(settings, mode="monolith")))


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
