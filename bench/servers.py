"""The comparison servers the benchmarks measure Marquee against, each a tiny aiohttp app:

- ``baseline``: the stack's ceiling — a bare aiohttp handler (uvloop, no middleware) answering
  ``/v1/similar/{id}`` with a precomputed JSON body (the real recommender's bytes for that id);
- ``stubs``: catalog, subscription and recommender stand-ins answering the contract JSON after
  fixed delays, on three ports of one process (they only sleep, so one process is plenty); each
  also serves its part of the movie page as an HTML fragment (``/fragments/...``, the bytes
  Marquee's own page has there) for node-tailor, which composes pages from HTML fragments;
- ``bare``: the minimal aiohttp composer: the same JSON calls with ``asyncio.gather`` (aiohttp's
  client), then one Jinja2 render of the same templates, no caches, no resilience.

Run one with ``python -m bench.servers <kind> --port P ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
import msgspec
import orjson
from aiohttp import web

from services.platform.settings import PROJECT_ROOT

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

T = TypeVar("T")
JSON = "application/json"
TEMPLATES_DIR = PROJECT_ROOT / "templates"
FRAGMENT_MARK = "<!--fragments-->"  # where Tailor's template takes its fragment tags


# ---- the bare baseline -------------------------------------------------------------------------
def baseline_app(bodies: dict[int, bytes], default: bytes) -> web.Application:
    async def similar(request: web.Request) -> web.Response:
        try:
            body = bodies.get(int(request.match_info["movie_id"]), default)
        except ValueError:
            body = default
        return web.Response(body=body, content_type=JSON)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=JSON)

    app = web.Application()
    app.router.add_get("/v1/similar/{movie_id}", similar)
    app.router.add_get("/healthz", healthz)
    return app


# ---- stub backends -----------------------------------------------------------------------------
def stub_movie(movie_id: int) -> dict:
    return {
        "id": movie_id,
        "title": f"Movie {movie_id} (1995)",
        "year": 1995,
        "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
        "imdb_id": f"tt{movie_id:07d}",
        "tmdb_id": 862,
        "rating_count": 215,
        "rating_mean": 3.92,
        "tags": ["pixar", "fun"],
    }


PLAN = {
    "id": "standard",
    "name": "Standard",
    "price_cents": 999,
    "currency": "EUR",
    "features": ["HD", "2 screens"],
}


def _similar_items(movie_id: int, k: int) -> list[dict]:
    return [{"movie_id": movie_id + i + 1, "score": round(0.9 - i * 0.05, 6)} for i in range(k)]


def stub_apps(delays: dict[str, float]) -> dict[str, web.Application]:
    """name -> app; ``delays`` in seconds per service ("catalog", "subscription",
    "recommender"; "catalog_batch" for the titles lookup, defaulting to the catalog's)."""

    async def pause(name: str) -> None:
        delay = delays.get(name, 0.0)
        if delay > 0:
            await asyncio.sleep(delay)

    def reply(data: object) -> web.Response:
        return web.Response(body=orjson.dumps(data), content_type=JSON)

    async def healthz(_request: web.Request) -> web.Response:
        return reply({"status": "ok"})

    async def movie(request: web.Request) -> web.Response:
        await pause("catalog")
        return reply(stub_movie(int(request.match_info["movie_id"])))

    async def movies(request: web.Request) -> web.Response:
        await pause("catalog_batch" if "catalog_batch" in delays else "catalog")
        ids = [int(i) for i in request.query.get("ids", "").split(",") if i.strip()]
        return reply({"items": [stub_movie(i) for i in ids], "missing": []})

    async def popular(request: web.Request) -> web.Response:
        await pause("catalog")
        limit = int(request.query.get("limit", "10"))
        return reply({"items": [stub_movie(i + 1) for i in range(limit)]})

    async def subscription(request: web.Request) -> web.Response:
        await pause("subscription")
        user_id = int(request.match_info["user_id"])
        return reply(
            {
                "user_id": user_id,
                "status": "active",
                "plan": PLAN,
                "updated_at": "2024-01-01T00:00:00+00:00",
            }
        )

    async def plans(_request: web.Request) -> web.Response:
        await pause("subscription")
        return reply({"items": [PLAN]})

    async def session(request: web.Request) -> web.Response:
        """The web server's session check (once per user and re-check interval, not per page)."""
        await pause("subscription")
        user_id = int(request.match_info["user_id"])
        return reply({"user_id": user_id, "generation": 0, "name": None})

    async def similar_one(request: web.Request) -> web.Response:
        await pause("recommender")
        movie_id = int(request.match_info["movie_id"])
        k = int(request.query.get("k", "10"))
        return reply(
            {
                "movie_id": movie_id,
                "model_version": "stub",
                "items": _similar_items(movie_id, k),
                "source": "model",
            }
        )

    async def similar_batch(request: web.Request) -> web.Response:
        await pause("recommender")
        ids = [int(i) for i in request.query.get("ids", "").split(",") if i.strip()]
        k = int(request.query.get("k", "10"))
        results = [
            {
                "movie_id": i,
                "model_version": "stub",
                "items": _similar_items(i, k),
                "source": "model",
            }
            for i in ids
        ]
        return reply({"model_version": "stub", "results": results, "missing": []})

    fragments = fragment_routes(delays)

    def app(routes: list[tuple[str, Handler]]) -> web.Application:
        application = web.Application()
        application.router.add_get("/healthz", healthz)
        application.router.add_get("/readyz", healthz)
        for path, handler in routes:
            application.router.add_get(path, handler)
        return application

    return {
        "catalog": app(
            [
                ("/v1/movies/popular", popular),
                ("/v1/movies/{movie_id:\\d+}", movie),
                ("/v1/movies", movies),
                *fragments["catalog"],
            ]
        ),
        "subscription": app(
            [
                ("/v1/plans", plans),
                ("/v1/users/{user_id}/subscription", subscription),
                ("/v1/users/{user_id}/session", session),
                *fragments["subscription"],
            ]
        ),
        "recommender": app(
            [
                ("/v1/similar/{movie_id}", similar_one),
                ("/v1/similar", similar_batch),
                *fragments["recommender"],
            ]
        ),
    }


# ---- the HTML fragments node-tailor composes ----------------------------------------------------
class PageParts:
    """Marquee's movie page for a stub movie, cut where Tailor's fragments go: the frame (head,
    header; footer), the movie's details, the plan box and the similar row. Rendered with
    Marquee's own templates, so both composers send the same page."""

    def __init__(self) -> None:
        from web_server.fragments import MovieFragments
        from web_server.render import environment

        self.fragments = MovieFragments(environment(TEMPLATES_DIR))
        self._cache: dict[int, tuple[str, str, str, str]] = {}

    def of(self, movie_id: int) -> tuple[str, str, str, str]:
        """(page before the movie's details, the details up to the plan box, text between the
        plan box and the similar row, page after the similar row)."""
        parts = self._cache.get(movie_id)
        if parts is None:
            shell = self.fragments.shell(_movie_struct(movie_id), logged_in=True)
            before_plan, between, after = shell.fill(
                {"user": 1, "user_label": "User 1", "user_initial": "1", "csrf": "x" * 43}
            )
            cut = before_plan.index('<article class="movie"')
            parts = (before_plan[:cut], before_plan[cut:], between, after)
            self._cache[movie_id] = parts
        return parts

    def plan(self, movie_id: int) -> str:
        from services.subscription.schemas import Plan, Subscription
        from web_server.schemas import PlanBox

        plan = msgspec.convert(PLAN, Plan)
        box = PlanBox(Subscription(1, "active", plan, "2024-01-01T00:00:00+00:00"), (plan,))
        values = {"movie_id": movie_id, "csrf": "x" * 43, "key": "k" * 32}
        return self.fragments.plan_box(box).text(values)

    def similar(self, movie_id: int, k: int) -> str:
        from web_server.schemas import PageItem, SimilarRow

        items = tuple(
            PageItem(i["movie_id"], *_card(i["movie_id"]), i["score"])
            for i in _similar_items(movie_id, k)
        )
        movie = _movie_struct(movie_id)
        return self.fragments.similar_row(SimilarRow(items, "model"), movie, False).html()


def _movie_struct(movie_id: int):  # -> services.catalog.schemas.Movie
    from services.catalog.schemas import Movie

    return msgspec.convert(stub_movie(movie_id), Movie)


def _card(movie_id: int) -> tuple[str, int, tuple[str, ...]]:
    movie = stub_movie(movie_id)
    return movie["title"], movie["year"], tuple(movie["genres"])


def fragment_routes(delays: dict[str, float]) -> dict[str, list[tuple[str, Handler]]]:
    """The stubs' HTML fragment routes, per stub: the similar row takes the recommender's and
    the titles lookup's time together (Tailor gets it in one call; Marquee chains two)."""
    parts = PageParts()

    def html(text: str) -> web.Response:
        return web.Response(text=text, content_type="text/html")

    async def movie(request: web.Request) -> web.Response:
        await asyncio.sleep(delays.get("catalog", 0.0))
        return html(parts.of(int(request.match_info["movie_id"]))[1])

    async def plan(request: web.Request) -> web.Response:
        await asyncio.sleep(delays.get("subscription", 0.0))
        return html(parts.plan(int(request.query.get("movie", "1"))))

    async def similar(request: web.Request) -> web.Response:
        chain = delays.get("recommender", 0.0) + delays.get("catalog_batch", 0.0)
        await asyncio.sleep(chain)
        return html(parts.similar(int(request.match_info["movie_id"]), 12))

    async def frame(request: web.Request) -> web.Response:
        """The page around the fragments, for Tailor's template (fetched once at bench start)."""
        before, _, between, after = parts.of(1)
        return html(f"{before}{FRAGMENT_MARK}{between}{FRAGMENT_MARK}{after}")

    return {
        "catalog": [("/fragments/movie/{movie_id}", movie), ("/fragments/frame", frame)],
        "subscription": [("/fragments/plan", plan)],
        "recommender": [("/fragments/similar/{movie_id}", similar)],
    }


# ---- the minimal aiohttp composer ---------------------------------------------------------------
SESSIONS = web.AppKey("sessions", dict)


def bare_app(catalog: str, subscription_url: str, recommender: str) -> web.Application:
    """The movie page as the simplest aiohttp service would make it: ``gather`` the same calls
    (aiohttp's client, one session per backend), one Jinja2 render, no caches, no resilience."""
    from recommender.schemas import Similar
    from services.catalog.schemas import Movie, Movies
    from services.subscription.schemas import Subscription
    from web_server.render import environment
    from web_server.schemas import PageItem, SimilarRow

    env = environment(TEMPLATES_DIR)
    shell = env.get_template("movie.html")
    plan_box = env.get_template("_plan.html")
    similar_row = env.get_template("_similar.html")

    async def sessions(app: web.Application):
        app[SESSIONS] = {
            n: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
            for n in ("c", "s", "r")
        }
        yield
        for session in app[SESSIONS].values():
            await session.close()

    async def get(session: aiohttp.ClientSession, url: str, into: type[T]) -> T:
        async with session.get(url) as resp:
            return msgspec.json.decode(await resp.read(), type=into)

    async def titled(s: dict, movie_id: int) -> SimilarRow:
        similar = await get(s["r"], f"{recommender}/v1/similar/{movie_id}?k=12", Similar)
        ids = ",".join(str(i.movie_id) for i in similar.items)
        titles = await get(s["c"], f"{catalog}/v1/movies?ids={ids}", Movies)
        scores = {i.movie_id: i.score for i in similar.items}
        items = tuple(PageItem(m.id, m.title, m.year, m.genres, scores[m.id]) for m in titles.items)
        return SimilarRow(items, similar.source)

    async def page(request: web.Request) -> web.Response:
        movie_id = int(request.match_info["movie_id"])
        s = request.app[SESSIONS]
        movie, subscription, similar = await asyncio.gather(
            get(s["c"], f"{catalog}/v1/movies/{movie_id}", Movie),
            get(s["s"], f"{subscription_url}/v1/users/1/subscription", Subscription),
            titled(s, movie_id),
        )
        csrf = lambda: "x" * 43  # noqa: E731 - the templates call it
        frame = shell.render(
            movie=movie, user=1, csrf_token=csrf, request_path=f"/movies/{movie_id}"
        )
        plan_html = plan_box.render(
            plan=subscription,
            plans=[subscription.plan],
            movie=movie,
            idempotency_key="k" * 32,
            csrf_token=csrf,
        )
        similar_html = similar_row.render(
            similar=similar, degraded=False, genre=None, href="/movies/"
        )
        before, between, after = frame.split("\x00")[0::2]
        text = before + plan_html + between + similar_html + after
        return web.Response(text=text, content_type="text/html")

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=JSON)

    app = web.Application()
    app.cleanup_ctx.append(sessions)
    app.router.add_get("/movies/{movie_id}", page)
    app.router.add_get("/healthz", healthz)
    return app


# ---- running -----------------------------------------------------------------------------------
async def _serve(apps: dict[int, web.Application]) -> None:
    runners = []
    for port, app in apps.items():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=False).start()
        runners.append(runner)
    # as the services' runner does (services/platform/runner.py): no full-GC pass over the
    # startup heap in the middle of a measurement
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def serve(apps: dict[int, web.Application]) -> None:
    """Serve ``port -> app`` on 127.0.0.1 until SIGTERM, on uvloop when installed."""
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(apps))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.servers")
    sub = p.add_subparsers(dest="kind", required=True)
    b = sub.add_parser("baseline", help="bare aiohttp, precomputed bodies")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--bodies", help="JSON file {movie_id: body object}")
    s = sub.add_parser("stubs", help="catalog, subscription, recommender stand-ins")
    s.add_argument("--catalog-port", type=int, required=True)
    s.add_argument("--subscription-port", type=int, required=True)
    s.add_argument("--recommender-port", type=int, required=True)
    for name in ("catalog", "subscription", "recommender", "catalog-batch"):
        s.add_argument(f"--{name}-ms", type=float, default=None)
    n = sub.add_parser("bare", help="the minimal aiohttp composer")
    n.add_argument("--port", type=int, required=True)
    n.add_argument("--catalog-url", required=True)
    n.add_argument("--subscription-url", required=True)
    n.add_argument("--recommender-url", required=True)
    args = p.parse_args(argv)
    if args.kind == "baseline":
        bodies: dict[int, bytes] = {}
        if args.bodies:
            raw = orjson.loads(Path(args.bodies).read_bytes())
            bodies = {int(k): orjson.dumps(v) for k, v in raw.items()}
        default = next(
            iter(bodies.values()),
            orjson.dumps(
                {
                    "movie_id": 1,
                    "model_version": "baseline",
                    "items": _similar_items(1, 10),
                    "source": "cache",
                }
            ),
        )
        serve({args.port: baseline_app(bodies, default)})
    elif args.kind == "stubs":
        delays = {
            name.replace("-", "_"): value / 1000.0
            for name in ("catalog", "subscription", "recommender", "catalog-batch")
            if (value := getattr(args, f"{name.replace('-', '_')}_ms")) is not None
        }
        apps = stub_apps(delays)
        serve(
            {
                args.catalog_port: apps["catalog"],
                args.subscription_port: apps["subscription"],
                args.recommender_port: apps["recommender"],
            }
        )
    else:
        serve(
            {
                args.port: bare_app(
                    args.catalog_url.rstrip("/"),
                    args.subscription_url.rstrip("/"),
                    args.recommender_url.rstrip("/"),
                )
            }
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
