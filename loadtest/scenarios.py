"""The scenarios: what one simulated visit does, as small async functions.

A scenario raises on failure (``HttpStatusError``, ``BadResponse``, or aiohttp's own errors)
and returns normally on success; the runner times it and classifies the exception, so the
scenarios hold no measurement code and cost little per call.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import orjson

from loadtest.workload import Workload

PLANS = ("basic", "standard", "premium")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_JSON = {"Content-Type": "application/json"}


class HttpStatusError(Exception):
    """The server answered with a 4xx/5xx status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class BadResponse(Exception):
    """The server answered, but not with what a real client needs (no CSRF token, no redirect)."""


@dataclass(frozen=True)
class Context:
    """Shared by every scenario of a run: one client session, the URLs, the workload."""

    http: aiohttp.ClientSession
    connector: aiohttp.BaseConnector
    timeout: aiohttp.ClientTimeout
    web: str
    rec: str
    workload: Workload
    headers: dict[str, str]


Scenario = Callable[[Context, random.Random], Awaitable[None]]


async def _get(http: aiohttp.ClientSession, url: str, params: dict | None = None) -> bytes:
    async with http.get(url, params=params, allow_redirects=False) as resp:
        body = await resp.read()
        if resp.status >= 400:
            raise HttpStatusError(resp.status)
    return body


async def _post_form(http: aiohttp.ClientSession, url: str, data: dict[str, str]) -> int:
    async with http.post(url, data=data, allow_redirects=False) as resp:
        await resp.read()
        if resp.status >= 400:
            raise HttpStatusError(resp.status)
        return resp.status


def hidden_value(html: bytes, name: str) -> str | None:
    """The first hidden input ``name``'s value, whichever attribute comes first."""
    quoted = re.escape(name.encode())
    for pattern in (
        rb"""name=["']""" + quoted + rb"""["'][^>]*?value=["']([^"']+)["']""",
        rb"""value=["']([^"']+)["'][^>]*?name=["']""" + quoted + rb"""["']""",
    ):
        match = re.search(pattern, html)
        if match:
            return match.group(1).decode("utf-8", "replace")
    return None


def extract_csrf(html: bytes) -> str | None:
    return hidden_value(html, "csrf_token")


def plan_form(html: bytes, choice: str, token: str) -> dict[str, str]:
    """What the movie page's plan form posts for ``choice`` (a plan id or "cancel"): the choice
    plus the form's hidden fields (CSRF token, idempotency key, movie id)."""
    form = {"action": "cancel"} if choice == "cancel" else {"plan": choice}
    form["csrf_token"] = extract_csrf(html) or token
    for name in ("idempotency_key", "movie_id"):
        value = hidden_value(html, name)
        if value is not None:
            form[name] = value
    return form


async def page(ctx: Context, rng: random.Random) -> None:
    await _get(ctx.http, f"{ctx.web}/movies/{ctx.workload.movie(rng)}")


async def page_json(ctx: Context, rng: random.Random) -> None:
    await _get(ctx.http, f"{ctx.web}/api/pages/movies/{ctx.workload.movie(rng)}")


async def similar(ctx: Context, rng: random.Random) -> None:
    await _get(ctx.http, f"{ctx.rec}/v1/similar/{ctx.workload.movie(rng)}", {"k": "10"})


async def user_recs(ctx: Context, rng: random.Random) -> None:
    url = f"{ctx.rec}/v1/users/{ctx.workload.user(rng)}/recommendations"
    await _get(ctx.http, url, {"k": "10"})


async def batch_similar(ctx: Context, rng: random.Random) -> None:
    ids = ctx.workload.movies(rng, rng.randint(3, 10))
    await _get(ctx.http, f"{ctx.rec}/v1/similar", {"ids": ",".join(map(str, ids)), "k": "10"})


async def history_recs(ctx: Context, rng: random.Random) -> None:
    body = orjson.dumps({"history": ctx.workload.movies(rng, rng.randint(5, 20)), "k": 10})
    async with ctx.http.post(f"{ctx.rec}/v1/recommendations", data=body, headers=_JSON) as resp:
        await resp.read()
        if resp.status >= 400:
            raise HttpStatusError(resp.status)


async def search(ctx: Context, rng: random.Random) -> None:
    word, genre = ctx.workload.search(rng)
    params = {"q": word} if genre is None else {"q": word, "genre": genre}
    await _get(ctx.http, f"{ctx.web}/search", params)


async def home(ctx: Context, rng: random.Random) -> None:
    await _get(ctx.http, f"{ctx.web}/")


async def session(ctx: Context, rng: random.Random) -> None:
    """A logged-in visit: log in, view a movie page, then subscribe, change plan or cancel.

    Each visit gets its own cookie jar (one simulated user) but shares the run's connection
    pool, so logged-in traffic costs no extra sockets. ``unsafe=True`` lets the jar keep
    cookies from an IP-address host such as 127.0.0.1.
    """
    async with aiohttp.ClientSession(
        connector=ctx.connector,
        connector_owner=False,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=ctx.timeout,
        headers=ctx.headers,
    ) as http:
        token = extract_csrf(await _get(http, f"{ctx.web}/login"))
        if token is None:
            raise BadResponse("no csrf_token on /login")
        user = str(ctx.workload.user(rng))
        status = await _post_form(http, f"{ctx.web}/login", {"user_id": user, "csrf_token": token})
        if status not in REDIRECTS:
            raise BadResponse(f"login answered {status}, expected a redirect")
        html = await _get(http, f"{ctx.web}/movies/{ctx.workload.movie(rng)}")
        form = plan_form(html, rng.choice((*PLANS, "cancel")), token)
        status = await _post_form(http, f"{ctx.web}/subscription", form)
        if status not in REDIRECTS:
            raise BadResponse(f"subscription answered {status}, expected a redirect")


REGISTRY: dict[str, Scenario] = {
    "page": page,
    "page_json": page_json,
    "similar": similar,
    "user_recs": user_recs,
    "batch_similar": batch_similar,
    "history_recs": history_recs,
    "session": session,
    "search": search,
    "home": home,
}


def classify(exc: BaseException) -> str:
    """An error kind for the report: ``http_<status>``, ``timeout``, ``connection``, ..."""
    if isinstance(exc, HttpStatusError):
        return f"http_{exc.status}"
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11+
        return "timeout"
    if isinstance(exc, BadResponse):
        return "bad_response"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"http_{exc.status}" if exc.status else "bad_response"
    if isinstance(
        exc,
        aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | ConnectionError | OSError,
    ):
        return "connection"
    return f"other_{type(exc).__name__}"
