"""Tiny real HTTP servers on free loopback ports for the load-test tool's tests.

The servers stand in for Marquee with a known behaviour (a fixed delay, a serialising lock,
errors), so the tool's measurements can be checked against ground truth. They never touch
the real system and never use the default ports.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from loadtest.config import build_config
from loadtest.workload import Movie, Workload, build_workload

HITS = web.AppKey("hits", Counter)
ROOT = Path(__file__).resolve().parents[2]

MOVIES = [
    Movie(
        id=i,
        title=f"Movie {w} Story ({1990 + i})",
        genres=("Drama", "Comedy"),
        rating_count=400 // i,
    )
    for i, w in enumerate(
        ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel"], start=1
    )
]


def make_workload() -> Workload:
    return build_workload(MOVIES, popularity="counts", zipf_s=1.0, user_ids=(1, 610), source="test")


def csrf_form(token: str) -> str:
    return (
        "<html><body><form method=post action=/subscription>"
        f'<input type="hidden" name="csrf_token" value="{token}">'
        '<input type="hidden" name="idempotency_key" value="key-1">'
        "<button name=plan value=basic>Join</button></form></body></html>"
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def demo_login(sessions: dict[str, str]) -> tuple[Handler, Handler]:
    """The fake sites' log-in form and its POST: a demo login by user id (CSRF token checked),
    recorded in ``sessions`` (sid cookie -> user id)."""

    async def login_form(request: web.Request) -> web.StreamResponse:
        return web.Response(text=csrf_form("login-token"), content_type="text/html")

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if form.get("csrf_token") != "login-token" or not str(form.get("user_id", "")).isdigit():
            return web.Response(status=403)
        sid = secrets.token_hex(8)
        sessions[sid] = str(form["user_id"])
        resp = web.HTTPSeeOther("/")
        resp.set_cookie("sid", sid)
        raise resp

    return login_form, login


def fake_marquee_app(
    delay: float = 0.0, lock: asyncio.Lock | None = None, status: int = 200
) -> web.Application:
    """Every Marquee route the tool uses, each taking ``delay`` seconds (under ``lock`` if
    given, which serialises the server: capacity = 1 / delay) and answering ``status``."""
    app = web.Application()
    hits: Counter = Counter()
    app[HITS] = hits
    sessions: dict[str, str] = {}

    def route(name: str, body: Handler | None):
        async def handler(request: web.Request) -> web.StreamResponse:
            hits[name] += 1
            if lock is not None:
                async with lock:
                    await asyncio.sleep(delay)
            elif delay:
                await asyncio.sleep(delay)
            if status >= 400:
                return web.json_response({"error": {"code": "x", "message": "x"}}, status=status)
            if body is None:
                return web.json_response({"ok": True})
            return await body(request)

        return handler

    async def popular(request: web.Request) -> web.StreamResponse:
        limit = min(int(request.query.get("limit", "20")), 100)  # pages, as the catalog's
        offset = int(request.query.get("offset", "0"))
        items = [
            {"id": m.id, "title": m.title, "genres": list(m.genres), "rating_count": m.rating_count}
            for m in MOVIES[offset : offset + limit]
        ]
        return web.json_response({"items": items})

    async def movie_page(request: web.Request) -> web.StreamResponse:
        return web.Response(text=csrf_form("page-token"), content_type="text/html")

    login_form, login = demo_login(sessions)

    async def subscription(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if request.cookies.get("sid") not in sessions:
            return web.Response(status=401)
        if form.get("csrf_token") not in ("page-token", "login-token"):
            return web.Response(status=403)
        if form.get("idempotency_key") != "key-1":  # the form's own key must be posted back
            return web.Response(status=400)
        if form.get("action") != "cancel" and form.get("plan") not in (
            "basic",
            "standard",
            "premium",
        ):
            return web.Response(status=400)
        hits["subscription_" + str(form.get("action") or form.get("plan"))] += 1
        raise web.HTTPSeeOther("/account")

    async def recs(request: web.Request) -> web.StreamResponse:
        data = await request.json()
        assert isinstance(data["history"], list) and data["k"] == 10
        return web.json_response({"items": []})

    r = app.router
    r.add_get("/v1/movies/popular", popular)  # start-up only: not timed, never delayed
    r.add_get("/movies/{id}", route("page", movie_page))
    r.add_get("/api/pages/movies/{id}", route("page_json", None))
    r.add_get("/v1/similar/{id}", route("similar", None))
    r.add_get("/v1/similar", route("batch_similar", None))
    r.add_get("/v1/users/{id}/recommendations", route("user_recs", None))
    r.add_post("/v1/recommendations", route("history_recs", recs))
    r.add_get("/search", route("search", None))
    r.add_get("/", route("home", None))
    r.add_get("/login", route("login_form", login_form))
    r.add_post("/login", route("login", login))
    r.add_post("/subscription", route("subscription", subscription))
    return app


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Start apps on free loopback ports (port 0); returns their base URLs; stops them all."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def reset_server() -> AsyncIterator[str]:
    """A raw TCP server that accepts, reads the request and drops the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


@pytest.fixture
def config() -> Callable[..., object]:
    """Build a RunConfig with test-friendly defaults (no uvloop flag needed in-process)."""

    def make(**values: object):
        values.setdefault("seed", 7)
        return build_config(values)

    return make


@pytest.fixture
def workload() -> Workload:
    return make_workload()


@pytest.fixture
def fake_marquee(serve):
    """Serve a fake Marquee; returns ``(base_url, hits)`` where hits counts requests per route."""

    async def start(
        delay: float = 0.0, lock: asyncio.Lock | None = None, status: int = 200
    ) -> tuple[str, Counter]:
        app = fake_marquee_app(delay, lock, status)
        return await serve(app), app[HITS]

    return start


@pytest.fixture
def closed_port() -> int:
    """A loopback port that was free a moment ago (so connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FreezingServer(asyncio.Protocol):
    """A raw HTTP/1.1 server with a known latency: every request is answered after ``service``
    seconds, except that the whole server is frozen for ``freeze`` seconds in the middle of
    every ``period`` (counted from when it starts): a request arriving during a freeze is held
    until it ends, then served, held requests in arrival order.

    For an open-model run of whole periods at a constant rate the latency is ``service`` for a
    fraction ``1 - freeze / period`` of requests and uniform on ``(service, service + freeze]``
    for the rest, so ``P(latency > x) = (service + freeze - x) / period`` there, and the
    percentile ``p`` is ``service + freeze - (1 - p / 100) * period``.

    Raw asyncio rather than aiohttp: it shares the test's event loop with the load generator,
    and at ~20 µs per request instead of ~300 it leaves the generator its CPU on a busy machine.
    The freeze is in the middle of the period, so a run that starts with the server has warmed
    up its connections before the first freeze.
    """

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    BODY = b'{"ok":true}'

    def __init__(self, clock0: float, service: float, freeze: float, period: float,
                 held: dict[int, list]) -> None:  # fmt: skip
        self.clock0, self.service, self.freeze, self.period = clock0, service, freeze, period
        self.held = held  # cycle -> transports waiting for that cycle's thaw (shared)
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.arrived()

    def arrived(self) -> None:
        loop = asyncio.get_running_loop()
        thaw = (self.period + self.freeze) / 2  # the freeze is [thaw - freeze, thaw)
        cycle, phase = divmod(time.perf_counter() - self.clock0, self.period)
        if thaw - self.freeze <= phase < thaw:
            waiting = self.held.get(int(cycle))
            if waiting is None:
                waiting = self.held[int(cycle)] = []
                loop.call_later(thaw - phase, self.thaw, waiting)
            waiting.append(self)
        else:
            loop.call_later(self.service, self.respond)

    def thaw(self, waiting: list[FreezingServer]) -> None:
        loop = asyncio.get_running_loop()
        for n, proto in enumerate(waiting):  # in arrival order, each after its service time
            loop.call_later(self.service + n * 1e-6, proto.respond)

    def respond(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.RESPONSE + self.BODY)


@pytest.fixture
async def freezing_server() -> AsyncIterator[Callable[[float, float, float], Awaitable[str]]]:
    """Start ``FreezingServer``s on free loopback ports; returns their base URLs."""
    servers: list[asyncio.Server] = []

    async def start(service: float, freeze: float, period: float) -> str:
        loop = asyncio.get_running_loop()
        clock0 = time.perf_counter()
        held: dict[int, list] = {}
        server = await loop.create_server(
            lambda: FreezingServer(clock0, service, freeze, period, held), "127.0.0.1", 0
        )
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def cli() -> Callable[..., Awaitable[tuple[int, str, str]]]:
    """Run ``python -m loadtest ARGS`` as a user would, while the test's loop keeps serving."""

    async def run(*args: str, cwd: Path = ROOT, timeout: float = 60) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "loadtest",
            *args,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    return run


# ---- replayed users: a fake of the feedback routes --------------------------------------------
def movie_page_html(movie: int, view: str, similar: list[int]) -> str:
    """A movie page shaped like Marquee's (header, hero, plan form, the similar row with tracked
    links, a footer), plus a tracked-looking link outside the similar row that must be ignored."""
    cards = "".join(
        f'<li class="card">\n  <a href="/r/{view}/{m}">\n    <div class="poster poster-card" '
        f'aria-hidden="true"><span class="poster-initials">M{m}</span></div>\n    '
        f'<span class="card-title">Movie {m}</span>\n  </a>\n  <span class="card-meta">1999'
        "</span>\n</li>"
        for m in similar
    )
    return (
        '<!doctype html><html lang="en"><head><title>Movie</title></head><body>'
        '<header><a href="/">Marquee</a><a href="/login">Log in</a></header><main>'
        f'<section class="hero"><h1>Movie {movie}</h1><a href="/movies/{movie + 1}">next</a>'
        "</section>"
        '<section class="plan"><form method="post" action="/subscription">'
        '<input type="hidden" name="csrf_token" value="page-token"></form></section>'
        '<section class="shelf similar" aria-labelledby="similar-title">'
        '<h2 id="similar-title">More like this</h2>'
        f'<ul class="row" aria-label="Similar movies">\n  {cards}\n</ul></section>'
        f'</main><footer><a href="/r/{view}/424242">not in the row</a></footer></body></html>'
    )


@dataclass
class FeedbackLog:
    """What the fake feedback server saw: page views (user, movie), follows (user, movie) that
    counted, and follows it refused as replays."""

    views: list[tuple[str, int]] = field(default_factory=list)
    clicks: list[tuple[str, int]] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)


FEEDBACK = web.AppKey("feedback", FeedbackLog)


def fake_feedback_app(
    similar: Callable[[int], list[int]], report: Callable[[FeedbackLog], dict] | None
) -> web.Application:
    """Demo login, movie pages whose similar row is ``similar(movie)`` behind tracked links,
    ``/r/<view>/<movie>`` (303; one click per view counts; the same link twice is 409), and
    ``GET /v1/experiments/current`` answering ``report(what it saw so far)`` to the admin
    token."""
    app = web.Application()
    log = FeedbackLog()
    app[FEEDBACK] = log
    sessions: dict[str, str] = {}
    views: dict[str, str] = {}  # view id -> user
    followed: dict[str, set[int]] = {}

    login_form, login = demo_login(sessions)

    async def movie_page(request: web.Request) -> web.StreamResponse:
        user = sessions.get(request.cookies.get("sid", ""), "anonymous")
        movie = int(request.match_info["id"])
        view = f"v{len(views)}"
        views[view] = user
        log.views.append((user, movie))
        html = movie_page_html(movie, view, similar(movie))
        return web.Response(text=html, content_type="text/html")

    async def follow(request: web.Request) -> web.StreamResponse:
        view, movie = request.match_info["token"], int(request.match_info["id"])
        if view not in views:
            return web.json_response({"error": {"code": "bad_token", "message": "x"}}, status=400)
        seen = followed.setdefault(view, set())
        if movie in seen:
            log.refused.append((views.get(view, "?"), movie))
            return web.json_response({"error": {"code": "replayed", "message": "x"}}, status=409)
        if not seen:
            log.clicks.append((views.get(view, "?"), movie))
        seen.add(movie)
        raise web.HTTPSeeOther(f"/movies/{movie}")

    async def experiment(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer admin-token":
            return web.json_response({"error": {"code": "x", "message": "no"}}, status=401)
        if report is None:
            return web.json_response({"error": {"code": "none", "message": "none"}}, status=404)
        return web.json_response(report(log))

    r = app.router
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_get("/movies/{id}", movie_page)
    r.add_get("/r/{token}/{id}", follow)
    r.add_get("/v1/experiments/current", experiment)
    return app
