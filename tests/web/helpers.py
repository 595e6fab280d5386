"""Small helpers for the web tests: a browser-like session and reading forms off a page."""

from __future__ import annotations

import html
import re
import statistics
import time

import aiohttp

from services.platform import auth
from tests.web import stubs


def browser(user_id: int | None = None, secret: str = stubs.SECRET) -> aiohttp.ClientSession:
    """A client keeping cookies for 127.0.0.1 (the default jar ignores IP hosts)."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    if user_id is not None:
        session.cookie_jar.update_cookies({"marquee_session": auth.session_token(user_id, secret)})
    return session


def field(page: str, name: str, nth: int = 0) -> str:
    """The value of the nth hidden input called ``name`` in the page."""
    values = re.findall(rf'name="{re.escape(name)}" value="([^"]*)"', page)
    assert len(values) > nth, f"no field {name!r} #{nth} in page"
    return html.unescape(values[nth])


async def timed_get(session: aiohttp.ClientSession, url: str, **kwargs) -> tuple[float, int, str]:
    started = time.perf_counter()
    async with session.get(url, **kwargs) as resp:
        body = await resp.text()
    return time.perf_counter() - started, resp.status, body


async def median_latency(session: aiohttp.ClientSession, url: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        elapsed, status, _ = await timed_get(session, url)
        assert status == 200
        times.append(elapsed)
    return statistics.median(times)
