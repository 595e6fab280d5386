"""The recommender's HTTP API against a real server on loopback, a real Redis and the session's
trained model registry."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from recommender.app import RECOMMENDER, create_app
from recommender.registry import ModelRegistry
from services.platform.settings import Settings
from tests.support import async_wait_until, get_json

ADMIN = {"Authorization": "Bearer test-admin-token"}
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


@pytest.fixture
async def rec(settings: Settings) -> AsyncIterator[Running]:
    running = await start(settings)
    yield running
    await running.server.close()


async def test_similar_shape_then_cached(
    rec: Running, http: aiohttp.ClientSession, model_dir: Path
) -> None:
    version = ModelRegistry(model_dir).current_version()
    status, first = await get_json(http, f"{rec.url}/v1/similar/1?k=5")
    assert status == 200
    assert set(first) == {"movie_id", "model_version", "items", "source"}
    assert first["movie_id"] == 1 and first["model_version"] == version
    assert first["source"] == "model"
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
    assert body["user_id"] == 1 and body["source"] == "model" and len(body["items"]) == 7
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
    assert set(body) == {"model_version", "items", "source"} and body["source"] == "model"
    ids = [i["movie_id"] for i in body["items"]]
    assert len(ids) == 6 and not {1, 2, 3} & set(ids)

    status, cached = await post(http, url, json={"history": [1, 2, 3], "k": 6})
    assert status == 200 and cached["source"] == "cache" and cached["items"] == body["items"]

    for history in ([], [UNKNOWN, UNKNOWN + 1]):
        status, fallback = await post(http, url, json={"history": history})
        assert status == 200 and fallback["source"] == "fallback"
        assert len(fallback["items"]) == 10  # default k: the most popular movies
        counts = [i["score"] for i in fallback["items"]]
        assert counts == sorted(counts, reverse=True)


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
    assert all(len(r["items"]) == 3 and r["source"] == "model" for r in body["results"])
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
    assert len({r["model_version"] for r in results}) == 1


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
        if route.method != "HEAD"
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
