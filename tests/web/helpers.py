"""Small helpers for the web tests: a browser-like session and reading forms off a page."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Awaitable, Callable

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


class Rendezvous:
    """Stub backends that answer only once every named call has arrived (see ``Behaviour.hold``).

    Proves calls are concurrent by outcome: were they made one after another, the first would
    wait here for calls that never come, until its deadline."""

    def __init__(self, *names: str) -> None:
        self.arrived = {name: asyncio.Event() for name in names}
        self.met = 0

    def hold(self, name: str, path: str) -> Callable[[str], Awaitable[None]]:
        async def wait_for_everyone(request_path: str) -> None:
            if request_path != path:
                return
            self.arrived[name].set()
            await asyncio.gather(*(event.wait() for event in self.arrived.values()))
            if name == next(iter(self.arrived)):
                self.met += 1

        return wait_for_everyone


ADMIN_TOKEN = "test-admin-token"  # the test settings' admin token


async def admin_login(
    session: aiohttp.ClientSession, base: str, token: str = ADMIN_TOKEN
) -> aiohttp.ClientResponse:
    """Log in to /admin through its form (CSRF token read off the form); the 303 or refusal."""
    async with session.get(f"{base}/admin/login") as resp:
        assert resp.status == 200, await resp.text()
        page = await resp.text()
    form = {"csrf_token": field(page, "csrf_token"), "token": token}
    async with session.post(f"{base}/admin/login", data=form, allow_redirects=False) as resp:
        await resp.read()
        return resp


async def admin_dashboard(base: str) -> str:
    """The /admin dashboard's HTML, read in a fresh browser session after logging in."""
    async with browser() as session:
        assert (await admin_login(session, base)).status == 303
        async with session.get(f"{base}/admin") as resp:
            page = await resp.text()
            assert resp.status == 200, page[:500]
    return page
