"""The recommender's HTTP API against a real server on loopback, a real Redis and the session's
trained model registry."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import random
import shutil
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from recommender.app import RECOMMENDER, create_app
from recommender.cli import main as cli_main
from recommender.registry import ModelRegistry
from services.platform.middleware import UNMATCHED
from services.platform.settings import Settings
from tests.support import async_wait_until, get_json

ADMIN = {"Authorization": "Bearer test-admin-token"}
DATA = Path(__file__).resolve().parents[2] / "data" / "ml-latest-small"
UNKNOWN = 999_999


@dataclasses.dataclass
class Running:
    """A recommender server on a free loopback port, and its app (for the box's counters)."""

    server: TestServer
    url: str

    @property
    def box(self):
        return self.server.app[RECOMMENDER]


async def start(settings: Settings) -> Running:
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    return Running(server, str(server.make_url("")).rstrip("/"))


def copy_registry(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session registry, for tests that publish or roll back."""
    target = tmp_path / "models"
    shutil.copytree(model_dir, target, symlinks=True)
    return target


def republish(model_dir: Path) -> str:
    """Register the current model again as a new version and publish it (no refit needed)."""
    registry = ModelRegistry(model_dir)
    model, manifest = registry.load()
    return registry.register(
        model, data_hash=manifest.data_hash, metrics={"republished": 1.0}, trained_seconds=0.0
    ).version


async def test_similar_shape_then_cached(
    rec: Running, http: aiohttp.ClientSession, model_dir: Path
) -> None:
    version = ModelRegistry(model_dir).current_version()
    status, first = await get_json(http, f"{rec.url}/v1/similar/1?k=5")
    assert status == 200
    assert set(first) == {"movie_id", "model_version", "items", "source"}
    assert first["movie_id"] == 1 and first["model_version"] == version
    assert first["source"] == "collaborative"  # Toy Story: well liked, its kNN list
    assert len(first["items"]) == 5
    assert all(set(i) == {"movie_id", "score"} and i["movie_id"] != 1 for i in first["items"])
    scores = [i["score"] for i in first["items"]]
    assert scores == sorted(scores, reverse=True)

    status, second = await get_json(http, f"{rec.url}/v1/similar/1?k=5")
    assert status == 200 and second["source"] == "cache"
    assert second["items"] == first["items"] and second["model_version"] == version

    status, default_k = await get_json(http, f"{rec.url}/v1/similar/1")
    assert status == 200 and len(default_k["items"]) == 10


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1/similar/1?k=0", "invalid_param"),
        ("/v1/similar/1?k=101", "invalid_param"),
        ("/v1/similar/1?k=abc", "invalid_param"),
        ("/v1/similar/abc", "invalid_id"),
        ("/v1/similar/0", "invalid_id"),
        ("/v1/similar/-3", "invalid_id"),
        ("/v1/similar?ids=1,abc", "invalid_id"),
        ("/v1/similar?ids=", "invalid_param"),
        ("/v1/users/abc/recommendations", "invalid_id"),
        ("/v1/users/1/recommendations?k=1000", "invalid_param"),
    ],
)
async def test_bad_input_is_400(
    rec: Running, http: aiohttp.ClientSession, path: str, code: str
) -> None:
    status, body = await get_json(http, rec.url + path)
    assert status == 400, body
    assert body["error"]["code"] == code and body["error"]["message"]


async def test_unknown_ids_are_404(rec: Running, http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, f"{rec.url}/v1/similar/{UNKNOWN}")
    assert (status, body["error"]["code"]) == (404, "unknown_movie")
    status, body = await get_json(http, f"{rec.url}/v1/users/{UNKNOWN}/recommendations")
    assert (status, body["error"]["code"]) == (404, "unknown_user")


async def test_user_recommendations(rec: Running, http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, f"{rec.url}/v1/users/1/recommendations?k=7")
    assert status == 200
    assert body["user_id"] == 1 and body["source"] == "collaborative" and len(body["items"]) == 7
    assert body["model_version"] == rec.box.version
    status, again = await get_json(http, f"{rec.url}/v1/users/1/recommendations?k=7")
    assert again["source"] == "cache" and again["items"] == body["items"]


async def post(http: aiohttp.ClientSession, url: str, **kwargs) -> tuple[int, dict]:
    async with http.post(url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_recommendations_from_history(rec: Running, http: aiohttp.ClientSession) -> None:
    url = f"{rec.url}/v1/recommendations"
    status, body = await post(http, url, json={"history": [1, 2, 3, UNKNOWN], "k": 6})
    assert status == 200, body
    assert set(body) == {"model_version", "items", "source", "ignored"}
    assert body["source"] == "collaborative" and body["ignored"] == [UNKNOWN]
    ids = [i["movie_id"] for i in body["items"]]
    assert len(ids) == 6 and not {1, 2, 3} & set(ids)

    status, cached = await post(http, url, json={"history": [1, 2, 3], "k": 6})
    assert status == 200 and cached["source"] == "cache" and cached["items"] == body["items"]
    assert cached["ignored"] == []


async def test_unknown_histories_fall_back_on_one_scale(
    rec: Running, http: aiohttp.ClientSession
) -> None:
    url = f"{rec.url}/v1/recommendations"
    status, known = await post(http, url, json={"history": [1]})
    top_known = known["items"][0]["score"]
    for history in ([], [UNKNOWN, UNKNOWN + 1]):
        status, fallback = await post(http, url, json={"history": history})
        assert status == 200 and fallback["source"] == "fallback"
        assert fallback["ignored"] == history
        assert len(fallback["items"]) == 10  # default k: the most popular movies
        scores = [i["score"] for i in fallback["items"]]
        assert scores == sorted(scores, reverse=True)
        # the model's popularity prior, on the scale of real answers (not counts like 329.0)
        assert 0 < scores[0] <= rec.box.current.model.params.popularity_weight
        assert scores[0] < 10 * top_known


async def test_a_movie_nobody_rated_gets_content_neighbours(
    rec: Running, http: aiohttp.ClientSession
) -> None:
    model = rec.box.current.model
    unrated = int(model.item_ids[np.asarray(model.item_popularity) == 0][0])
    status, body = await get_json(http, f"{rec.url}/v1/similar/{unrated}?k=5")
    assert status == 200 and body["source"] == "content" and len(body["items"]) == 5
    status, body = await post(
        http, f"{rec.url}/v1/recommendations", json={"history": [unrated], "k": 5}
    )
    assert status == 200 and body["source"] == "content" and len(body["items"]) == 5


async def test_every_catalog_movie_has_similar_movies(
    rec: Running, http: aiohttp.ClientSession
) -> None:
    with open(DATA / "movies.csv", newline="", encoding="utf-8") as fh:
        ids = [int(row["movieId"]) for row in csv.DictReader(fh)]
    sources: Counter[str] = Counter()
    for start in range(0, len(ids), 100):
        chunk = ",".join(map(str, ids[start : start + 100]))
        status, body = await get_json(http, f"{rec.url}/v1/similar?ids={chunk}&k=10")
        assert status == 200 and body["missing"] == []
        assert all(r["items"] for r in body["results"])
        sources.update(r["source"] for r in body["results"])
    assert sum(sources.values()) == len(ids) == 9742
    assert set(sources) == {"collaborative", "blend", "content"}


def predict(model_dir: Path, histories: Path, k: int = 10) -> dict[int, list[tuple[int, float]]]:
    """``python -m recommender predict`` on a file; its answers by user."""
    out = histories.with_name(f"{histories.stem}-predicted.csv")
    args = ["predict", "--model-dir", str(model_dir), "--users", str(histories), "--k", str(k)]
    assert cli_main([*args, "--out", str(out)]) == 0
    got: dict[int, list[tuple[int, float]]] = {}
    with open(out, newline="") as fh:
        for r in csv.DictReader(fh):
            got.setdefault(int(r["user_id"]), []).append((int(r["movie_id"]), float(r["score"])))
    return got


def same_answer(predicted: list[tuple[int, float]], body: dict) -> bool:
    api = [(i["movie_id"], i["score"]) for i in body["items"]]
    ids_equal = [m for m, _ in predicted] == [m for m, _ in api]
    return ids_equal and all(
        abs(a - b) < 1e-5 for (_, a), (_, b) in zip(predicted, api, strict=True)
    )


async def test_predict_on_ratings_rows_equals_user_recommendations(
    rec: Running, http: aiohttp.ClientSession, model_dir: Path, tmp_path: Path
) -> None:
    """A user's MovieLens rows (shuffled) through ``predict`` = GET /v1/users/{id}/..."""
    users = [1, 7, 68, 414]
    with open(DATA / "ratings.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["userId"]) in users]
    random.Random(3).shuffle(rows)
    path = tmp_path / "histories.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["userId", "movieId", "rating", "timestamp"])
        writer.writeheader()
        writer.writerows(rows)
    predicted = predict(model_dir, path)
    assert sorted(predicted) == users
    for user in users:
        status, body = await get_json(http, f"{rec.url}/v1/users/{user}/recommendations?k=10")
        assert status == 200 and same_answer(predicted[user], body), (user, body)


async def test_predict_on_movie_ids_equals_history_recommendations(
    rec: Running, http: aiohttp.ClientSession, model_dir: Path, tmp_path: Path
) -> None:
    """``user_id,movie_id`` rows (no rating: likes; row order: time) = POST /v1/recommendations."""
    histories = {9001: [1, 3114, 2355], 9002: [296], 9003: [2571, 999_999_999]}
    path = tmp_path / "ids.csv"
    lines = [f"{user},{movie}" for user, movies in histories.items() for movie in movies]
    path.write_text("user_id,movie_id\n" + "\n".join(lines) + "\n")
    predicted = predict(model_dir, path)
    for user, history in histories.items():
        status, body = await post(
            http, f"{rec.url}/v1/recommendations", json={"history": history, "k": 10}
        )
        assert status == 200 and same_answer(predicted[user], body), (user, body)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, "invalid_json"),
        ({"data": b""}, "invalid_json"),
        ({"json": [1, 2, 3]}, "invalid_json"),
        ({"json": {"k": 3}}, "invalid_history"),
        ({"json": {"history": "1,2,3"}}, "invalid_history"),
        ({"json": {"history": {"1": 2}}}, "invalid_history"),
        ({"json": {"history": [1, "2"]}}, "invalid_history"),
        ({"json": {"history": [1, 2.5]}}, "invalid_history"),
        ({"json": {"history": [1, True]}}, "invalid_history"),
        ({"json": {"history": [0]}}, "invalid_history"),
        ({"json": {"history": list(range(1, 1002))}}, "invalid_history"),
        ({"json": {"history": [1], "k": 0}}, "invalid_param"),
        ({"json": {"history": [1], "k": "5"}}, "invalid_param"),
        ({"json": {"history": [1], "k": 101}}, "invalid_param"),
    ],
)
async def test_recommendations_bad_input(
    rec: Running, http: aiohttp.ClientSession, kwargs: dict, code: str
) -> None:
    status, body = await post(http, f"{rec.url}/v1/recommendations", **kwargs)
    assert (status, body["error"]["code"]) == (400, code), body


async def test_similar_batch_lists_missing(rec: Running, http: aiohttp.ClientSession) -> None:
    url = f"{rec.url}/v1/similar?ids=1,{UNKNOWN},2,1&k=3"
    status, body = await get_json(http, url)
    assert status == 200, body
    assert body["missing"] == [UNKNOWN] and body["model_version"] == rec.box.version
    assert [r["movie_id"] for r in body["results"]] == [1, 2]
    assert all(len(r["items"]) == 3 and r["source"] == "collaborative" for r in body["results"])
    status, again = await get_json(http, url)
    assert [r["source"] for r in again["results"]] == ["cache", "cache"]
    # the batch shares its entries with the single-movie endpoint
    status, single = await get_json(http, f"{rec.url}/v1/similar/2?k=3")
    assert single["source"] == "cache" and single["items"] == body["results"][1]["items"]


async def test_model_info(rec: Running, http: aiohttp.ClientSession, model_dir: Path) -> None:
    status, body = await get_json(http, f"{rec.url}/v1/model")
    assert status == 200
    manifest = ModelRegistry(model_dir).manifest(body["version"])
    assert body["version"] == ModelRegistry(model_dir).current_version()
    assert body["sha256"] == manifest.sha256 and body["data_hash"] == manifest.data_hash
    assert {"created", "params", "metrics", "loaded_at"} <= set(body)


@pytest.mark.parametrize("action", ["reload", "rollback"])
async def test_admin_needs_the_token(
    rec: Running, http: aiohttp.ClientSession, action: str
) -> None:
    url = f"{rec.url}/v1/model/{action}"
    status, body = await post(http, url)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body = await post(http, url, headers={"Authorization": "Bearer nope"})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await post(http, url, headers={"Authorization": "Basic dGVzdA=="})
    assert status == 403


async def test_admin_reload_with_token(rec: Running, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, f"{rec.url}/v1/model/reload", headers=ADMIN)
    assert status == 200 and body == {
        "version": rec.box.version,
        "previous": rec.box.version,
        "changed": False,
    }
    # the shared registry has one published version: nothing to roll back to
    status, body = await post(http, f"{rec.url}/v1/model/rollback", headers=ADMIN)
    assert (status, body["error"]["code"]) == (409, "no_previous_version")


async def test_admin_reload_and_rollback(
    settings: Settings, http: aiohttp.ClientSession, model_dir: Path, tmp_path: Path
) -> None:
    models = copy_registry(model_dir, tmp_path)
    first = ModelRegistry(models).current_version()
    rec = await start(dataclasses.replace(settings, model_dir=models))
    try:
        second = await asyncio.to_thread(republish, models)
        status, body = await post(http, f"{rec.url}/v1/model/reload", headers=ADMIN)
        assert status == 200 and body == {"version": second, "previous": first, "changed": True}
        status, similar = await get_json(http, f"{rec.url}/v1/similar/1")
        assert similar["model_version"] == second
        status, body = await post(http, f"{rec.url}/v1/model/rollback", headers=ADMIN)
        assert status == 200 and body["version"] == first and body["previous"] == second
        status, info = await get_json(http, f"{rec.url}/v1/model")
        assert info["version"] == first
        assert ModelRegistry(models).current_version() == first
    finally:
        await rec.server.close()


async def test_stampede_computes_once(rec: Running, http: aiohttp.ClientSession) -> None:
    """50 concurrent requests for one uncached key: one model computation, 50 good answers."""
    before = rec.box.computed["similar"]
    url = f"{rec.url}/v1/similar/318?k=20"
    answers = await asyncio.gather(*(get_json(http, url) for _ in range(50)))
    assert {status for status, _ in answers} == {200}
    assert len({tuple(i["movie_id"] for i in body["items"]) for _, body in answers}) == 1
    assert rec.box.computed["similar"] - before == 1
    # the same through the box directly (the monolith's in-process path)
    results = await asyncio.gather(*(rec.box.similar(50, 7) for _ in range(50)))
    assert rec.box.computed["similar"] - before == 2
    assert len({r.model_version for r in results}) == 1


async def test_not_ready_until_a_model_is_published(
    settings: Settings, http: aiohttp.ClientSession, model_dir: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-models"
    rec = await start(dataclasses.replace(settings, model_dir=empty, model_poll_interval=0.1))
    try:
        status, body = await get_json(http, f"{rec.url}/readyz")
        assert status == 503 and body["checks"]["model"] is False
        for path in ("/v1/similar/1", "/v1/model", "/v1/users/1/recommendations"):
            status, body = await get_json(http, rec.url + path)
            assert (status, body["error"]["code"]) == (503, "model_not_loaded"), path
        status, body = await post(http, f"{rec.url}/v1/recommendations", json={"history": [1]})
        assert (status, body["error"]["code"]) == (503, "model_not_loaded")
        status, body = await get_json(http, f"{rec.url}/healthz")
        assert status == 200

        # publish a first model into the empty registry: the watcher's check picks it up
        model, manifest = ModelRegistry(model_dir).load()
        await asyncio.to_thread(
            ModelRegistry(empty).register,
            model,
            data_hash=manifest.data_hash,
            metrics={},
            trained_seconds=0.0,
        )

        async def ready() -> bool:
            return (await get_json(http, f"{rec.url}/readyz"))[0] == 200

        await async_wait_until(ready, 30, "/readyz to turn 200")
        status, body = await get_json(http, f"{rec.url}/v1/similar/1")
        assert status == 200 and body["model_version"] == ModelRegistry(empty).current_version()
    finally:
        await rec.server.close()


async def test_openapi_lists_every_route(rec: Running, http: aiohttp.ClientSession) -> None:
    status, doc = await get_json(http, f"{rec.url}/openapi.json")
    assert status == 200
    routes = {
        (resource.canonical, route.method.lower())
        for resource in rec.server.app.router.resources()
        for route in resource
        if route.method != "HEAD" and route.name != UNMATCHED
    }
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert routes <= documented, routes - documented


async def test_metrics_show_model_and_cache(rec: Running, http: aiohttp.ClientSession) -> None:
    await get_json(http, f"{rec.url}/v1/similar/1")
    await get_json(http, f"{rec.url}/v1/similar/1")
    async with http.get(f"{rec.url}/metrics") as resp:
        text = await resp.text()
    assert f'marquee_model_info{{version="{rec.box.version}"}} 1.0' in text
    assert 'marquee_cache_requests_total{cache="redis",result="miss"}' in text
    assert "marquee_cache_requests_total" in text and 'result="hit"' in text
