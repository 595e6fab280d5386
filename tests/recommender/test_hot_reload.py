"""Model published as data: a running recommender picks up new versions (Redis pub/sub notice,
or its periodic registry check), swaps atomically with zero failed requests, rolls back, and
refuses a tampered artifact while it keeps serving the old one."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import aiohttp
import redis

from recommender.app import WATCHER
from recommender.cache import cache_key, redis_key
from recommender.redisconn import Namespace
from recommender.registry import ARTIFACT, ModelRegistry
from recommender.reload import notify_from_env, notify_published, publish_notice
from services.platform.settings import Settings
from tests.recommender.test_service import ADMIN, copy_registry, post, republish, start
from tests.support import (
    PYTHON,
    Answer,
    Process,
    async_wait_until,
    free_port,
    get_json,
    marquee_env,
    similar_load,
)


async def current_version(http: aiohttp.ClientSession, base: str) -> str | None:
    status, body = await get_json(http, f"{base}/v1/model")
    return body.get("version") if status == 200 else None


async def test_hot_reload_under_load(
    redis_url: str, model_dir: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The key scenario: publish, publish, roll back - while clients keep asking."""
    models = copy_registry(model_dir, tmp_path)
    registry = ModelRegistry(models)
    v1 = registry.current_version()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = marquee_env(
        host="127.0.0.1",
        recommender_port=port,
        model_dir=models,
        var_dir=tmp_path / "var",
        redis_url=redis_url,
        model_poll_interval=300,  # only the notices can make it reload in time
    )
    server = Process([PYTHON, "-m", "recommender", "serve"], env, tmp_path / "serve.log").start()
    namespace = Namespace.of(Settings(var_dir=tmp_path / "var"))
    channel = namespace.model_channel
    plain = redis.Redis.from_url(redis_url)
    stop = asyncio.Event()
    answers: list[Answer] = []
    try:

        async def ready() -> bool:
            try:
                return (await get_json(http, f"{base}/readyz"))[0] == 200
            except aiohttp.ClientError:
                return False

        await async_wait_until(ready, 20, "the recommender to be ready")

        async def subscribed() -> bool:
            return dict(plain.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1

        await async_wait_until(subscribed, 5, "the watcher to subscribe")
        assert await current_version(http, base) == v1
        # a v1 entry in the cache, to show the swap needs no flush
        assert (await get_json(http, f"{base}/v1/similar/1?k=5"))[1]["source"] == "collaborative"
        assert (await get_json(http, f"{base}/v1/similar/1?k=5"))[1]["source"] == "cache"

        model = (await asyncio.to_thread(registry.load))[0]
        movie_ids = [int(m) for m in model.item_ids[:300] if m != 1]  # 1 is the probe
        del model
        loops = [
            asyncio.create_task(
                similar_load(http, [base], movie_ids, answers, stop, seed=n, seconds=20)
            )
            for n in range(4)
        ]

        async def answered(n: int) -> None:
            target = len(answers) + n

            async def enough() -> bool:
                return len(answers) >= target

            await async_wait_until(enough, 10, f"{n} more answers")

        async def swapped_to(version: str) -> float:
            async def serving() -> bool:
                return await current_version(http, base) == version

            await async_wait_until(serving, 10, f"the server to serve {version}")
            return time.monotonic()

        phases: list[tuple[str, float, float]] = []  # (version, served from, next publish at)
        await answered(20)
        published_at = time.monotonic()
        v2 = await asyncio.to_thread(republish, models)
        assert await notify_published(redis_url, v2, namespace) >= 1
        served_v2 = await swapped_to(v2)
        phases.append((v1, 0.0, published_at))

        # the v1 entry is still in Redis (no flush) but a v2 answer never comes from it
        assert plain.exists(redis_key(namespace, cache_key(v1, "similar", "1:5")))
        status, body = await get_json(http, f"{base}/v1/similar/1?k=5")
        assert (status, body["model_version"], body["source"]) == (200, v2, "collaborative")

        await answered(20)
        published_at = time.monotonic()
        v3 = await asyncio.to_thread(republish, models)
        # the CLI's way
        assert await asyncio.to_thread(publish_notice, redis_url, v3, namespace) >= 1
        served_v3 = await swapped_to(v3)
        phases.append((v2, served_v2, published_at))

        await answered(20)
        published_at = time.monotonic()
        assert (await asyncio.to_thread(registry.rollback)).version == v2
        assert await notify_published(redis_url, v2, namespace) >= 1
        served_back = await swapped_to(v2)
        phases.append((v3, served_v3, published_at))
        phases.append((v2, served_back, float("inf")))
        await answered(20)
        stop.set()
        await asyncio.gather(*loops)

        failures = [a for a in answers if a.status != 200]
        assert not failures, failures[:5]
        assert {a.version for a in answers} <= {v1, v2, v3}
        for version, served_from, next_publish in phases:
            # asked after the swap was visible and before the next publish: this version only
            window = [a for a in answers if served_from < a.started < next_publish]
            assert window, f"no answers while {version} was served"
            assert {a.version for a in window} == {version}, (version, len(window))
        assert len(answers) >= 80
    finally:
        stop.set()
        plain.close()
        code = server.stop()
        if code not in (0, -15):
            print(server.log_tail())


async def test_tampered_artifact_is_refused(
    settings: Settings, model_dir: Path, tmp_path: Path, http: aiohttp.ClientSession, redis_url: str
) -> None:
    models = copy_registry(model_dir, tmp_path)
    v1 = ModelRegistry(models).current_version()
    rec = await start(dataclasses.replace(settings, model_dir=models, model_poll_interval=300))
    try:
        assert rec.box.version == v1
        v2 = await asyncio.to_thread(republish, models)  # published, not yet loaded
        artifact = models / "versions" / v2 / ARTIFACT
        os.chmod(artifact, 0o644)
        with open(artifact, "r+b") as fh:  # flip one byte in the middle of the arrays
            fh.seek(artifact.stat().st_size // 2)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))

        status, body = await post(http, f"{rec.url}/v1/model/reload", headers=ADMIN)
        assert (status, body["error"]["code"]) == (409, "integrity_error"), body
        assert v2 in body["error"]["message"] and v1 in body["error"]["message"]
        status, similar = await get_json(http, f"{rec.url}/v1/similar/1")
        assert (status, similar["model_version"]) == (200, v1)
        assert (await get_json(http, f"{rec.url}/v1/model"))[1]["version"] == v1

        # a notice for the bad version changes nothing either (and does not crash the watcher)
        watcher = rec.server.app[WATCHER]
        await async_wait_until(lambda: _true(watcher.subscribed.is_set()), 5, "subscribed")
        notices = watcher.notices
        assert await notify_published(redis_url, v2, Namespace.of(settings)) == 1
        await async_wait_until(lambda: _true(watcher.notices > notices), 5, "the notice")
        assert rec.box.version == v1
        assert (await get_json(http, f"{rec.url}/readyz"))[0] == 200
    finally:
        await rec.server.close()


async def test_watcher_polls_when_redis_is_down(
    settings: Settings, model_dir: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """No Redis at all (configured but dead): the periodic registry check alone converges."""
    models = copy_registry(model_dir, tmp_path)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    rec = await start(
        dataclasses.replace(settings, model_dir=models, redis_url=dead, model_poll_interval=0.1)
    )
    try:
        v2 = await asyncio.to_thread(republish, models)

        async def serving_v2() -> bool:
            status, body = await get_json(http, f"{rec.url}/v1/similar/1")
            assert status == 200
            return body["model_version"] == v2

        await async_wait_until(serving_v2, 5, "the poll to load v2")
        assert not rec.server.app[WATCHER].subscribed.is_set()
        assert notify_from_env(v2, {"MARQUEE_REDIS_URL": dead}) is None
        assert notify_from_env(v2, {"MARQUEE_REDIS_URL": ""}) is None
    finally:
        await rec.server.close()


async def test_notice_reloads_at_once(
    settings: Settings, model_dir: Path, tmp_path: Path, http: aiohttp.ClientSession, redis_url: str
) -> None:
    models = copy_registry(model_dir, tmp_path)
    rec = await start(dataclasses.replace(settings, model_dir=models, model_poll_interval=300))
    try:
        watcher = rec.server.app[WATCHER]
        await async_wait_until(lambda: _true(watcher.subscribed.is_set()), 5, "subscribed")
        v2 = await asyncio.to_thread(republish, models)
        env = {"MARQUEE_REDIS_URL": redis_url, "MARQUEE_VAR_DIR": str(settings.var_dir)}
        assert notify_from_env(v2, env) == 1
        # another install (another var dir) on the same Redis does not hear it
        other = {"MARQUEE_REDIS_URL": redis_url, "MARQUEE_VAR_DIR": str(tmp_path / "other")}
        assert notify_from_env(v2, other) == 0
        await async_wait_until(lambda: _true(rec.box.version == v2), 5, "the notice's reload")
        status, info = await get_json(http, f"{rec.url}/v1/model")
        assert (status, info["version"]) == (200, v2)
    finally:
        await rec.server.close()


async def _true(value: bool) -> bool:
    return value


def flip_a_byte(models: Path, version: str) -> None:
    """Change one byte in the middle of a version's arrays, in place (the file stays the same
    inode, so a process that memory-mapped it sees the change at once)."""
    artifact = models / "versions" / version / ARTIFACT
    os.chmod(artifact, 0o644)
    with open(artifact, "r+b") as fh:
        fh.seek(artifact.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))


async def test_a_served_artifact_changed_in_place_is_caught_at_reload(
    settings: Settings, model_dir: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Issue 18.6: the served (memory-mapped) version tampered with: a reload re-checks it and
    the box falls back to the last version that verifies, instead of "changed: false"."""
    models = copy_registry(model_dir, tmp_path)
    v1 = ModelRegistry(models).current_version()
    v2 = await asyncio.to_thread(republish, models)
    rec = await start(dataclasses.replace(settings, model_dir=models, model_poll_interval=300))
    try:
        assert rec.box.version == v2
        flip_a_byte(models, v2)
        status, body = await post(http, f"{rec.url}/v1/model/reload", headers=ADMIN)
        assert (status, body["changed"], body["version"]) == (200, True, v1), body
        status, similar = await get_json(http, f"{rec.url}/v1/similar/1")
        assert (status, similar["model_version"]) == (200, v1)
    finally:
        await rec.server.close()


async def test_a_served_artifact_changed_in_place_is_caught_by_the_watcher(
    settings: Settings, model_dir: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    models = copy_registry(model_dir, tmp_path)
    v1 = ModelRegistry(models).current_version()
    v2 = await asyncio.to_thread(republish, models)
    checks = dataclasses.replace(settings, model_dir=models, model_verify_interval=0.2)
    rec = await start(checks)
    try:
        flip_a_byte(models, v2)

        async def fell_back() -> bool:
            return await current_version(http, rec.url) == v1

        await async_wait_until(fell_back, 30, "the watcher to find the change")
        status, similar = await get_json(http, f"{rec.url}/v1/similar/1")
        assert (status, similar["model_version"]) == (200, v1)
    finally:
        await rec.server.close()


async def test_a_restart_on_a_tampered_current_version_serves_the_last_good_one(
    settings: Settings, model_dir: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """It served no model at all (503) after a restart; the published-before version verifies."""
    models = copy_registry(model_dir, tmp_path)
    v1 = ModelRegistry(models).current_version()
    v2 = await asyncio.to_thread(republish, models)
    flip_a_byte(models, v2)
    rec = await start(dataclasses.replace(settings, model_dir=models, model_poll_interval=300))
    try:
        assert (await get_json(http, f"{rec.url}/readyz"))[0] == 200
        status, similar = await get_json(http, f"{rec.url}/v1/similar/1")
        assert (status, similar["model_version"]) == (200, v1)
    finally:
        await rec.server.close()


async def test_non_finite_scores_are_never_served(
    settings: Settings, model_dir: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A model whose numbers went bad (NaN, infinity) answers 503, not a score of 1e38 or NaN."""
    import numpy as np

    models = copy_registry(model_dir, tmp_path)
    registry = ModelRegistry(models)
    model, manifest = registry.load()
    lists = model.similar_lists
    weights = np.array(lists.weights, copy=True)
    row = int(np.searchsorted(np.asarray(model.item_ids), 1))
    weights[int(lists.indptr[row])] = np.inf  # movie 1's best neighbour
    broken = dataclasses.replace(model, similar_lists=dataclasses.replace(lists, weights=weights))
    registry.register(broken, data_hash=manifest.data_hash, metrics={}, trained_seconds=0.0)
    rec = await start(dataclasses.replace(settings, model_dir=models, model_poll_interval=300))
    try:
        status, body = await get_json(http, f"{rec.url}/v1/similar/1")
        assert (status, body["error"]["code"]) == (503, "model_fault"), body
        status, _ = await get_json(http, f"{rec.url}/v1/similar/2")
        assert status == 200  # the other movies' answers are sound
    finally:
        await rec.server.close()
