"""The result cache: LRU/TTL, Redis cache-aside, single-flight, and Redis failing under a running
service (killed, frozen, restarted) - the box keeps answering from the model."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from pathlib import Path

import aiohttp
import pytest
import redis

from recommender.cache import (
    LocalCache,
    RedisCache,
    SingleFlight,
    TieredCache,
    cache_key,
    open_cache,
    redis_key,
)
from recommender.redisconn import Namespace
from services.platform.metrics import Metrics
from services.platform.settings import Settings
from tests.recommender.test_service import start
from tests.support import async_wait_until, free_port, get_json, start_redis

COMPUTED = ("collaborative", "blend", "content")  # a similar list computed now, not cached


def counted(metrics: Metrics, cache: str, result: str) -> float:
    metrics.flush()  # as a scrape does
    value = metrics.registry.get_sample_value(
        "marquee_cache_requests_total", {"cache": cache, "result": result}
    )
    return value or 0.0


# ---- LocalCache ---------------------------------------------------------------------------------
async def test_local_cache_is_a_bounded_lru() -> None:
    metrics = Metrics("test")
    cache = LocalCache(max_entries=3, ttl=60, metrics=metrics)
    for i in range(3):
        await cache.set(f"k{i}", f"v{i}".encode())
    assert await cache.get("k0") == b"v0"  # k0 is now the most recently used
    await cache.set("k3", b"v3")  # evicts k1, the least recently used
    assert len(cache) == 3
    assert await cache.get_many(["k0", "k1", "k2", "k3"]) == [b"v0", None, b"v2", b"v3"]
    assert counted(metrics, "local", "hit") == 4 and counted(metrics, "local", "miss") == 1


async def test_local_cache_expires_entries() -> None:
    cache = LocalCache(max_entries=10, ttl=-1)  # already expired when stored
    await cache.set("k", b"v")
    assert await cache.get("k") is None and len(cache) == 0
    disabled = LocalCache(max_entries=0)
    await disabled.set("k", b"v")
    assert await disabled.get("k") is None


# ---- RedisCache -------------------------------------------------------------------------------
async def test_redis_cache_aside_with_ttl(redis_url: str) -> None:
    metrics = Metrics("test")
    cache = RedisCache(redis_url, ttl=120, metrics=metrics)
    try:
        key = cache_key("v1", "similar", "1:10")
        stored = redis_key(Namespace("default"), key)
        assert stored == "marquee:default:rec:v1:v1:similar:1:10"
        assert await cache.get(key) is None
        await cache.set(key, b'{"a":1}')
        assert await cache.get(key) == b'{"a":1}'
        await cache.set_many([("x", b"1"), ("y", b"2")])
        assert await cache.get_many(["x", "nope", "y"]) == [b"1", None, b"2"]
        plain = redis.Redis.from_url(redis_url)
        assert 0 < plain.ttl(stored) <= 120
        assert 0 < plain.ttl(redis_key(Namespace("default"), "x")) <= 120
        plain.close()
        assert counted(metrics, "redis", "hit") == 3 and counted(metrics, "redis", "miss") == 2
        assert cache.errors == 0
    finally:
        await cache.close()


async def test_redis_down_is_a_miss_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens on the port: every call returns at once, the breaker skips Redis, and the
    outage is logged once, not once per call."""
    metrics = Metrics("test")
    cache = RedisCache(
        f"redis://127.0.0.1:{free_port()}/0", ttl=60, metrics=metrics, breaker_reset=30
    )
    caplog.set_level(logging.WARNING, "marquee.recommender.cache")
    try:
        for i in range(20):
            assert await cache.get(f"k{i}") is None
            await cache.set(f"k{i}", b"v")
        assert await cache.get_many(["a", "b"]) == [None, None]
        # one attempt failed; the other 41 calls skipped Redis (no connect, no wait)
        assert cache.errors == 1 and not cache.available
        assert counted(metrics, "redis", "error") == 1 and counted(metrics, "redis", "bypass") > 0
        outages = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
        assert len(outages) == 1
    finally:
        await cache.close()


async def test_tiered_cache_fills_its_local_layer(redis_url: str) -> None:
    remote = RedisCache(redis_url, ttl=60)
    cache = TieredCache(LocalCache(100, 60, name="l1"), remote)
    try:
        await remote.set("shared", b"from-redis")
        assert await cache.get("shared") == b"from-redis"  # fetched from Redis, kept locally
        assert await cache.local.get("shared") == b"from-redis"
        await cache.set_many([("a", b"1")])
        assert await remote.get("a") == b"1" and await cache.get_many(["a", "b"]) == [b"1", None]
    finally:
        await cache.close()


async def test_open_cache_chooses_by_reachability(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "marquee.recommender.cache")
    metrics = Metrics("test")
    live = await open_cache(Settings(redis_url=redis_url), metrics)
    off = await open_cache(Settings(redis_url=""), metrics)
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    dead = await open_cache(Settings(redis_url=dead_url), metrics)
    try:
        assert isinstance(live, TieredCache) and live.remote.url == redis_url
        assert isinstance(off, LocalCache)
        # configured explicitly but down at start: still Redis, picked up when it comes back
        assert isinstance(dead, TieredCache) and dead.remote.url == dead_url
        messages = [r.getMessage() for r in caplog.records]
        assert f"cache: redis at {redis_url}" in messages
        assert "cache: in-process (Redis disabled)" in messages
        assert any(m.startswith(f"cache: redis at {dead_url} (not reachable yet") for m in messages)
    finally:
        for cache in (live, off, dead):
            await cache.close()


# ---- SingleFlight -----------------------------------------------------------------------------
async def test_single_flight_shares_one_computation() -> None:
    flights = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def work() -> bytes:
        nonlocal calls
        calls += 1
        await gate.wait()
        return b"result"

    tasks = [asyncio.create_task(flights.run("key", work)) for _ in range(50)]
    await async_wait_until(lambda: _true(len(flights) == 1 and calls == 1), 2, "the leader")
    gate.set()
    assert await asyncio.gather(*tasks) == [b"result"] * 50
    assert calls == 1 and len(flights) == 0


async def _true(value: bool) -> bool:
    return value


async def test_single_flight_shares_errors_and_survives_a_cancelled_leader() -> None:
    flights = SingleFlight()
    gate = asyncio.Event()

    async def fail() -> bytes:
        await gate.wait()
        raise ValueError("boom")

    tasks = [asyncio.create_task(flights.run("k", fail)) for _ in range(5)]
    await asyncio.sleep(0)  # let them all register (a scheduling step, not a wait for time)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)

    blocked = asyncio.Event()
    leader = asyncio.create_task(flights.run("c", lambda: blocked.wait()))
    await asyncio.sleep(0)

    async def quick() -> str:
        return "follower computed"

    follower = asyncio.create_task(flights.run("c", quick))
    await asyncio.sleep(0)
    leader.cancel()
    assert await follower == "follower computed"  # took over, was not cancelled with it
    with pytest.raises(asyncio.CancelledError):
        await leader


# ---- Redis failing under a running service ----------------------------------------------------
async def test_service_survives_redis_killed_and_restarted(
    settings: Settings,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "marquee.recommender.cache")
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    own_redis = start_redis(port, workdir)
    url = f"redis://127.0.0.1:{port}/0"
    settings = dataclasses.replace(settings, redis_url=url)
    rec = await start(settings)
    replica = None
    try:
        status, body = await get_json(http, f"{rec.url}/v1/similar/1?k=5")
        assert (status, body["source"]) == (200, "collaborative")
        assert (await get_json(http, f"{rec.url}/v1/similar/1?k=5"))[1]["source"] == "cache"

        own_redis.kill()  # SIGKILL, by PID
        model = rec.box.current.model
        movie_ids = [int(m) for m in model.item_ids[1:2000]]
        for movie_id in movie_ids[:20]:
            status, body = await get_json(http, f"{rec.url}/v1/similar/{movie_id}?k=5")
            assert status == 200, body
            assert body["source"] in COMPUTED and len(body["items"]) == 5
        status, body = await get_json(http, f"{rec.url}/v1/users/1/recommendations")
        assert status == 200 and body["source"] == "collaborative"
        cache = rec.box.cache
        assert cache.remote.errors >= 1
        assert len([r for r in caplog.records if "redis unavailable" in r.getMessage()]) == 1

        own_redis = start_redis(port, workdir)  # the same port again
        plain = redis.Redis.from_url(url)
        version = rec.box.version
        fresh = iter(movie_ids[20:])
        stored: list[int] = []

        async def redis_used_again() -> bool:
            movie_id = next(fresh)
            status, _ = await get_json(http, f"{rec.url}/v1/similar/{movie_id}?k=5")
            assert status == 200
            key = cache_key(version, "similar", f"{movie_id}:5")
            if plain.exists(redis_key(Namespace.of(settings), key)):
                stored.append(movie_id)
            return bool(stored)

        await async_wait_until(redis_used_again, 5, "the box to write to Redis again")
        plain.close()
        # a second replica (empty in-process layer) is served that entry from Redis
        replica = await start(settings)
        status, body = await get_json(http, f"{replica.url}/v1/similar/{stored[0]}?k=5")
        assert (status, body["source"]) == (200, "cache")
        assert any("redis is back" in r.getMessage() for r in caplog.records)
    finally:
        if replica is not None:
            await replica.server.close()
        await rec.server.close()
        own_redis.stop()


async def test_service_survives_a_frozen_redis(
    settings: Settings, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A Redis that accepts but never answers (SIGSTOP) costs one short timeout, then the
    breaker skips it; answers stay correct and fast."""
    port = free_port()
    own_redis = start_redis(port, tmp_path)
    rec = await start(dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{port}/0"))
    try:
        assert (await get_json(http, f"{rec.url}/v1/similar/1?k=3"))[0] == 200
        own_redis.signal(signal.SIGSTOP)
        model = rec.box.current.model
        for movie_id in model.item_ids[1:31]:
            status, body = await get_json(http, f"{rec.url}/v1/similar/{int(movie_id)}?k=3")
            assert status == 200 and body["source"] in COMPUTED
        # the breaker skipped the frozen Redis: not one timeout per request
        assert 1 <= rec.box.cache.remote.errors <= 10
        own_redis.signal(signal.SIGCONT)
        fresh = iter(int(m) for m in model.item_ids[31:300])

        async def cached_again() -> bool:
            movie_id = next(fresh)
            url = f"{rec.url}/v1/similar/{movie_id}?k=3"
            await get_json(http, url)
            rec.box.cache.local.clear()  # look past the in-process layers, at Redis itself
            rec.box.current.memo.clear()
            return (await get_json(http, url))[1]["source"] == "cache"

        await async_wait_until(cached_again, 5, "cache hits from Redis again")
    finally:
        await rec.server.close()
        own_redis.stop()
