"""Stub backends for the web server's tests: small aiohttp apps that follow the contract JSON of
the catalog, subscription and recommender services, with a configurable delay and failure mode.

The delay is the backend's own behaviour (a slow service), not synchronisation in the test; it
waits on an event that teardown sets, so a stopped test never waits out a long delay. ``hold``
lets a test make a backend answer only once something else has happened (another backend was
called, the browser saw the title): orderings are then proven by outcomes, not by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from services.platform import auth

SECRET = "test-secret-key-of-the-suite"
SCRIPT_TITLE = "<script>alert('x')</script> Evil"
SCRIPT_TAG = "<img src=x onerror=alert(1)>"


def _movie(
    mid: int,
    title: str,
    year: int,
    genres: list[str],
    count: int,
    mean: float,
    tags: list[str] | None = None,
) -> dict:
    return {
        "id": mid,
        "title": title,
        "year": year,
        "genres": genres,
        "imdb_id": f"tt{114700 + mid:07d}",
        "tmdb_id": 800 + mid,
        "rating_count": count,
        "rating_mean": mean,
        "tags": tags or [],
    }


def _genres(movie_id: int) -> list[str]:
    return ["Adventure", "Animation", "Comedy"] if movie_id % 2 else ["Adventure", "Comedy"]


MOVIES: dict[int, dict] = {
    m["id"]: m
    for m in [
        _movie(1, "Toy Story", 1995, ["Adventure", "Animation", "Children"], 215, 3.92, ["pixar"]),
        *[
            _movie(i, f"Stub Movie {i}", 1990 + i % 20, _genres(i), 100 - i, 3.5)
            for i in range(2, 30)
        ],
        _movie(666, SCRIPT_TITLE, 2000, ["Horror"], 3, 2.0, [SCRIPT_TAG]),
    ]
}

PLANS = [
    {"id": "basic", "name": "Basic", "price_cents": 799, "currency": "USD", "features": ["HD"]},
    {
        "id": "standard",
        "name": "Standard",
        "price_cents": 1299,
        "currency": "USD",
        "features": ["Full HD", "2 screens"],
    },
    {
        "id": "premium",
        "name": "Premium",
        "price_cents": 1799,
        "currency": "USD",
        "features": ["4K", "4 screens"],
    },
]


@dataclass
class Behaviour:
    """How one stub backend behaves: a delay per call and a failure mode."""

    delay: float = 0.0
    mode: str = "ok"  # ok | error500 | garbage
    fast_paths: tuple[str, ...] = ()  # paths answered without the delay
    calls: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    # awaited before answering a request (given its path); None answers at once
    hold: Callable[[str], Awaitable[None]] | None = None


def _behave(behaviour: Behaviour):
    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        behaviour.calls.append(request.path_qs)
        behaviour.request_ids.append(request.headers.get("X-Request-ID", ""))
        delay = 0.0 if request.path in behaviour.fast_paths else behaviour.delay
        if delay:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await behaviour.release.wait()
        if behaviour.hold is not None:
            await behaviour.hold(request.path)
        if behaviour.mode == "error500":
            return web.json_response({"error": {"code": "internal", "message": "boom"}}, status=500)
        if behaviour.mode == "garbage":
            return web.Response(text="<html>not json", content_type="text/html")
        return await handler(request)

    return middleware


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _system_routes(app: web.Application, service: str) -> None:
    """``/healthz`` and ``/readyz`` as every real service answers them (the dashboard probes)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": service})

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready", "checks": {service: True}})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


STUB_VERSION = "20240101T000000Z-stub0001"
STUB_MANIFEST = {
    "version": STUB_VERSION,
    "created": "2024-01-01T00:00:00Z",
    "sha256": "0" * 64,
    "hmac": None,
    "data_hash": "stub",
    "metrics": {"recall@10": 0.1234, "ndcg@20": 0.2345},
    "n_items": 29,
    "algorithm": "knn",
}
STUB_METRICS = """# TYPE marquee_cache_requests counter
marquee_cache_requests_total{cache="redis",result="hit"} 30.0
marquee_cache_requests_total{cache="redis",result="miss"} 10.0
# TYPE marquee_batch_queue_depth gauge
marquee_batch_queue_depth 3.0
"""


def catalog_app(behaviour: Behaviour) -> web.Application:
    async def movie(request: web.Request) -> web.Response:
        mid = int(request.match_info["id"])
        if mid not in MOVIES:
            return _error(404, "unknown_movie", f"movie {mid} does not exist")
        return web.json_response(MOVIES[mid])

    async def movies(request: web.Request) -> web.Response:
        ids = [int(i) for i in request.query["ids"].split(",")]
        return web.json_response(
            {
                "items": [MOVIES[i] for i in ids if i in MOVIES],
                "missing": [i for i in ids if i not in MOVIES],
            }
        )

    async def popular(request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "10"))
        genre = request.query.get("genre")
        pool = [m for m in MOVIES.values() if not genre or genre in m["genres"]]
        pool.sort(key=lambda m: -m["rating_count"])
        return web.json_response({"items": pool[:limit]})

    async def search(request: web.Request) -> web.Response:
        q = request.query.get("q", "").lower()
        items = [m for m in MOVIES.values() if q in m["title"].lower()]
        limit, offset = int(request.query["limit"]), int(request.query["offset"])
        return web.json_response(
            {
                "items": items[offset : offset + limit],
                "total": len(items),
                "limit": limit,
                "offset": offset,
            }
        )

    async def genres(request: web.Request) -> web.Response:
        names = sorted({g for m in MOVIES.values() for g in m["genres"]})
        return web.json_response({"items": [{"name": n, "count": 1} for n in names]})

    app = web.Application(middlewares=[_behave(behaviour)])
    app.router.add_get("/v1/movies/search", search)
    app.router.add_get("/v1/movies/popular", popular)
    app.router.add_get("/v1/movies/{id}", movie)
    app.router.add_get("/v1/movies", movies)
    app.router.add_get("/v1/genres", genres)
    _system_routes(app, "catalog")
    return app


def subscription_app(behaviour: Behaviour) -> web.Application:
    """Keeps plans in a dict and checks the caller's session token, like the real service."""
    state: dict[int, str] = {}
    seen: dict[str, dict] = {}

    def view(user_id: int) -> dict:
        plan = next((p for p in PLANS if p["id"] == state.get(user_id)), None)
        return {
            "user_id": user_id,
            "status": "active" if plan else "none",
            "plan": plan,
            "updated_at": "2024-01-01T00:00:00Z" if plan else None,
        }

    def allowed(request: web.Request, user_id: int) -> bool:
        token = request.headers.get(auth.SESSION_HEADER)
        return auth.session_user(token, SECRET, 3600) == user_id

    async def plans(request: web.Request) -> web.Response:
        return web.json_response({"items": PLANS})

    async def session(request: web.Request) -> web.Response:
        """Every user is in session generation 0 here: nobody ever logged out."""
        user_id = int(request.match_info["id"])
        if not allowed(request, user_id):
            return _error(403, "forbidden", "not your session")
        return web.json_response({"user_id": user_id, "generation": 0, "name": None})

    async def get(request: web.Request) -> web.Response:
        user_id = int(request.match_info["id"])
        if not allowed(request, user_id):
            return _error(403, "forbidden", "not your subscription")
        return web.json_response(view(user_id))

    async def write(request: web.Request) -> web.Response:
        user_id = int(request.match_info["id"])
        if not allowed(request, user_id):
            return _error(403, "forbidden", "not your subscription")
        key = request.headers.get("Idempotency-Key", "")
        if key in seen:
            return web.json_response(seen[key])
        if request.method == "DELETE":
            state.pop(user_id, None)
        else:
            state[user_id] = (await request.json())["plan"]
        seen[key] = view(user_id)
        return web.json_response(seen[key])

    app = web.Application(middlewares=[_behave(behaviour)])
    app.router.add_get("/v1/plans", plans)
    app.router.add_get("/v1/users/{id}/subscription", get)
    app.router.add_get("/v1/users/{id}/session", session)
    app.router.add_put("/v1/users/{id}/subscription", write)
    app.router.add_delete("/v1/users/{id}/subscription", write)
    _system_routes(app, "subscription")
    return app


def recommender_app(behaviour: Behaviour, experiment: dict | None = None) -> web.Application:
    """``experiment``: the report ``GET /v1/experiments/current`` answers with (admin token
    only), or None for the 404 ``no_experiment``."""

    def items(exclude: int, k: int) -> list[dict]:
        ids = [i for i in MOVIES if i != exclude][:k]
        return [{"movie_id": i, "score": round(1 - n / 100, 3)} for n, i in enumerate(ids)]

    async def similar(request: web.Request) -> web.Response:
        mid = int(request.match_info["id"])
        k = int(request.query.get("k", "10"))
        return web.json_response(
            {"movie_id": mid, "model_version": "stub", "items": items(mid, k), "source": "model"}
        )

    async def user_recs(request: web.Request) -> web.Response:
        uid = int(request.match_info["id"])
        k = int(request.query.get("k", "10"))
        return web.json_response(
            {"user_id": uid, "model_version": "stub", "items": items(1, k), "source": "model"}
        )

    async def model(request: web.Request) -> web.Response:
        return web.json_response({**STUB_MANIFEST, "loaded_at": "2024-01-01T00:00:01+00:00"})

    async def models(request: web.Request) -> web.Response:
        body = {"current": STUB_VERSION, "published": [STUB_VERSION], "items": [STUB_MANIFEST]}
        return web.json_response(body)

    async def current_experiment(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer test-admin-token":
            return _error(403, "forbidden", "wrong admin token")
        if experiment is None:
            return _error(404, "no_experiment", "no experiment is running")
        return web.json_response(experiment)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=STUB_METRICS, content_type="text/plain")

    app = web.Application(middlewares=[_behave(behaviour)])
    app.router.add_get("/v1/similar/{id}", similar)
    app.router.add_get("/v1/users/{id}/recommendations", user_recs)
    app.router.add_get("/v1/model", model)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/experiments/current", current_experiment)
    app.router.add_get("/metrics", metrics)
    _system_routes(app, "recommender")
    return app
