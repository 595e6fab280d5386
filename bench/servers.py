"""The comparison servers the benchmarks measure Marquee against, each a tiny aiohttp app:

- ``baseline``: the stack's ceiling — a bare aiohttp handler (uvloop, no middleware) answering
  ``/v1/similar/{id}`` with a precomputed JSON body (the real recommender's bytes for that id);
- ``stubs``: catalog, subscription and recommender stand-ins answering the contract JSON after
  fixed delays, on three ports of one process (they only sleep, so one process is plenty);
- ``naive``: a sequential page composer, awaiting the four backend calls one after another,
  to show what the concurrent fan-out saves.

Run one with ``python -m bench.servers <kind> --port P ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

JSON = "application/json"


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

    def app(routes: list[tuple[str, object]]) -> web.Application:
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
            ]
        ),
        "subscription": app(
            [("/v1/plans", plans), ("/v1/users/{user_id}/subscription", subscription)]
        ),
        "recommender": app(
            [("/v1/similar/{movie_id}", similar_one), ("/v1/similar", similar_batch)]
        ),
    }


# ---- the naive sequential composer -------------------------------------------------------------
SESSIONS = web.AppKey("sessions", dict)


def naive_app(catalog: str, subscription: str, recommender: str, token: str) -> web.Application:
    """The same page as ``/api/pages/movies/{id}``, composed one call after another."""

    async def sessions(app: web.Application):
        connector = {n: aiohttp.TCPConnector(limit=100) for n in ("c", "s", "r")}
        app[SESSIONS] = {n: aiohttp.ClientSession(connector=c) for n, c in connector.items()}
        yield
        for session in app[SESSIONS].values():
            await session.close()

    async def get(session: aiohttp.ClientSession, url: str, **kwargs) -> dict:
        async with session.get(url, **kwargs) as resp:
            return orjson.loads(await resp.read())

    async def page(request: web.Request) -> web.Response:
        movie_id = int(request.match_info["movie_id"])
        s = request.app[SESSIONS]
        movie = await get(s["c"], f"{catalog}/v1/movies/{movie_id}")
        plan = await get(
            s["s"],
            f"{subscription}/v1/users/1/subscription",
            headers={"Authorization": f"Bearer {token}"},
        )
        similar = await get(s["r"], f"{recommender}/v1/similar/{movie_id}", params={"k": "10"})
        ids = ",".join(str(i["movie_id"]) for i in similar["items"])
        titles = await get(s["c"], f"{catalog}/v1/movies", params={"ids": ids})
        by_id = {m["id"]: m for m in titles["items"]}
        items = [
            {
                "movie_id": i["movie_id"],
                "title": by_id.get(i["movie_id"], {}).get("title"),
                "score": i["score"],
            }
            for i in similar["items"]
        ]
        body = {
            "movie": movie,
            "plan": plan.get("plan"),
            "similar": {"items": items, "source": similar.get("source")},
            "degraded": [],
        }
        return web.Response(body=orjson.dumps(body), content_type=JSON)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=JSON)

    app = web.Application()
    app.cleanup_ctx.append(sessions)
    app.router.add_get("/api/pages/movies/{movie_id}", page)
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
    n = sub.add_parser("naive", help="sequential composer")
    n.add_argument("--port", type=int, required=True)
    n.add_argument("--catalog-url", required=True)
    n.add_argument("--subscription-url", required=True)
    n.add_argument("--recommender-url", required=True)
    n.add_argument("--token", default="")
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
                args.port: naive_app(
                    args.catalog_url.rstrip("/"),
                    args.subscription_url.rstrip("/"),
                    args.recommender_url.rstrip("/"),
                    args.token,
                )
            }
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
