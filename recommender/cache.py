"""The recommender's result cache: cache-aside over Redis, or an in-process LRU without Redis.

Values are the finished JSON bytes of a response body, so a hit is answered without parsing or
re-serialising anything. Keys carry the model version (``{version}:{kind}:{args}``, stored in Redis
as ``marquee:<namespace>:rec:v1:{version}:{kind}:{args}``, see ``recommender/redisconn.py``) so a
newly loaded model never sees an older model's results and a swap needs no flush. Every key has a
TTL, so the cache's Redis may evict (``allkeys-lru``); a Redis Cluster works (``redis+cluster://``):
the keys carry no hash tag and spread over its nodes, and a batch read is split per slot.

Redis is an optimisation, never a dependency: every call has a short timeout, a failure opens a
tiny circuit breaker (Redis is skipped for ``breaker_reset`` seconds, then tried again), the outage
is logged once when it starts and once when it ends, and the caller simply computes from the model.

Single-flight: concurrent misses for one key *within a process* share one computation
(:class:`SingleFlight`, an asyncio future per key). Across processes we accept one computation per
process: results are microseconds to milliseconds of numpy work, so a cross-process Redis lock would
cost more round trips than it saves.

With Redis, a small in-process LRU of response bytes sits in front of it (:class:`TieredCache`,
4096 entries, 60 s): measured on 2 cores with wrk, ``GET /v1/similar/{id}`` went from ~7.4k to
~13.7k requests/s per worker process, since a hot key no longer costs a Redis round trip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from recommender import redisconn
from recommender.redisconn import Namespace
from services.platform.metrics import Metrics, TalliedCounter
from services.platform.settings import AUTO, Settings

log = logging.getLogger("marquee.recommender.cache")

T = TypeVar("T")


def cache_key(version: str, kind: str, args: str) -> str:
    return f"{version}:{kind}:{args}"


def redis_key(namespace: Namespace, key: str) -> str:
    """Where ``key`` lives in the cache's Redis."""
    return f"{namespace.cache}:{key}"


class Cache(Protocol):
    """What the box needs from a cache. Implementations never raise on a backend failure."""

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None: ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


class CounterChildren:
    """A cache's ``marquee_cache_requests`` children, bound once per result and tallied
    (``TalliedCounter``): ``labels()`` on every lookup costs more than the lookup itself (~1.4 µs
    against ~0.1 µs for a tallied child)."""

    def __init__(self, metrics: Metrics | None, cache: str) -> None:
        self.metrics = metrics
        self.cache = cache
        self._children: dict[str, TalliedCounter] = {}

    def child(self, result: str) -> TalliedCounter | None:
        """The bound counter for ``result`` (None without metrics): for callers that count on a
        hot path and want to skip even this dict lookup."""
        if self.metrics is None:
            return None
        child = self._children.get(result)
        if child is None:
            child = self.metrics.tallied(self.metrics.cache.labels(self.cache, result))
            self._children[result] = child
        return child

    def inc(self, result: str, n: int = 1) -> None:
        child = self.child(result)
        if child is not None:
            child.inc(n)


def _entry_size(key: object, value: bytes) -> int:
    return len(value) + len(key) if isinstance(key, str) else len(value)


class ResponseMemo:
    """Finished response bodies of ONE model version, by query arguments, in a plain dict.

    It lives on the loaded-model object (``box.Loaded``), so it is created empty with each version
    and dropped with it: a swap can never serve a previous version's bytes, and keys need no
    version. A hit is one dict lookup, no key formatting, no single-flight, no LRU bookkeeping;
    that is what lets the hottest route run close to a bare aiohttp handler.

    An answer may also be stored under an alias: the HTTP route's request target as sent
    (``/v1/similar/1?k=10``), so the recommender service answers a repeated request before
    aiohttp routes it (``answer_before_routing``). Within one version a target always gets the
    same answer.

    Bounded by the bytes it holds (``max_bytes``; an alias counts its own length and its body's,
    though the body is shared): when full, the oldest entries go first (a dict keeps insertion
    order, so this costs nothing on a hit). Entries never expire: a version's answers never
    change. Hits and misses are counted as ``cache="memo"``, once per lookup.
    """

    def __init__(self, max_bytes: int, metrics: Metrics | None = None) -> None:
        self.max_bytes = max_bytes
        self.size = 0  # bytes held
        self._data: dict[object, bytes] = {}
        counters = CounterChildren(metrics, "memo")
        self._hit = counters.child("hit")
        self._miss = counters.child("miss")

    def get(self, key: object) -> bytes | None:
        value = self._data.get(key)
        counter = self._miss if value is None else self._hit
        if counter is not None:
            counter.inc()
        return value

    def get_alias(self, alias: str) -> bytes | None:
        """``get`` by an alias (see ``put``), counting only a hit: a caller that misses looks up the
        key next (``get`` counts that lookup, hit or miss)."""
        value = self._data.get(alias)
        if value is not None and self._hit is not None:
            self._hit.inc()
        return value

    def put(self, key: object, value: bytes) -> None:
        """Store ``value`` under ``key`` (a tuple of query arguments), or under an alias (a str)."""
        size = _entry_size(key, value)
        if size > self.max_bytes or key in self._data:
            return
        data = self._data
        while data and self.size + size > self.max_bytes:
            oldest = next(iter(data))
            self.size -= _entry_size(oldest, data.pop(oldest))
        data[key] = value
        self.size += size

    def clear(self) -> None:
        self._data.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class LocalCache:
    """In-process LRU with a TTL and a bounded number of entries (the monolith without Redis)."""

    def __init__(
        self,
        max_entries: int = 10_000,
        ttl: float = 3600.0,
        metrics: Metrics | None = None,
        name: str = "local",
    ) -> None:
        self.name = name
        self.max_entries = max_entries
        self.ttl = ttl
        self.metrics = metrics
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._counters = CounterChildren(metrics, name)

    def _count(self, result: str, n: int = 1) -> None:
        if n:
            self._counters.inc(result, n)

    def _lookup(self, key: str, now: float) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def get(self, key: str) -> bytes | None:
        value = self._lookup(key, time.monotonic())
        self._count("hit" if value is not None else "miss")
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        values = [self._lookup(k, now) for k in keys]
        hits = sum(v is not None for v in values)
        self._count("hit", hits)
        self._count("miss", len(values) - hits)
        return values

    def put(self, key: str, value: bytes) -> None:
        if self.max_entries <= 0:
            return
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def set(self, key: str, value: bytes) -> None:
        self.put(key, value)

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for key, value in items:
            self.put(key, value)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    async def close(self) -> None:
        self._data.clear()

    def describe(self) -> str:
        return f"in-process LRU ({self.max_entries} entries, ttl {self.ttl:g}s)"


class RedisCache:
    """Cache-aside over Redis with short timeouts and a circuit breaker; never raises."""

    def __init__(
        self,
        url: str,
        ttl: int,
        metrics: Metrics | None = None,
        *,
        namespace: Namespace | None = None,
        timeout: float = 0.05,
        connect_timeout: float = 0.2,
        breaker_reset: float = 1.0,
    ) -> None:
        self.name = "redis"
        self.url = url
        self.ttl = ttl
        self.metrics = metrics
        self.breaker_reset = breaker_reset
        self.prefix = (namespace or Namespace("default")).cache + ":"
        self.client = redisconn.connect(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,  # new connections come in bursts under load
            retry=Retry(NoBackoff(), 0),  # a retry is the next request's job, not this one's
            health_check_interval=0,
        )
        self._down_until = 0.0  # monotonic; Redis is skipped until then
        self._outage_started: float | None = None
        self.errors = 0
        self._counters = CounterChildren(metrics, self.name)

    @property
    def available(self) -> bool:
        """False while the breaker is open (Redis failed less than ``breaker_reset`` ago)."""
        return time.monotonic() >= self._down_until

    def _count(self, result: str, n: int = 1) -> None:
        if n:
            self._counters.inc(result, n)

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._count("error")
        self._down_until = time.monotonic() + self.breaker_reset
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            log.warning(
                "cache: redis unavailable, answering from the model",
                extra={"redis": self.url, "error": f"{type(exc).__name__}: {exc}"},
            )

    def _succeeded(self) -> None:
        if self._outage_started is not None:
            lasted = time.monotonic() - self._outage_started
            self._outage_started = None
            log.warning(
                "cache: redis is back", extra={"redis": self.url, "outage_s": round(lasted, 3)}
            )

    async def _call(self, op: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        if not self.available:
            self._count("bypass")
            return False, None
        try:
            result = await op()
        except redisconn.FAILURES as exc:
            self._failed(exc)
            return False, None
        self._succeeded()
        return True, result

    async def get(self, key: str) -> bytes | None:
        ok, value = await self._call(lambda: self.client.get(self.prefix + key))
        if ok:
            self._count("hit" if value is not None else "miss")
        return value if ok and isinstance(value, bytes) else None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        prefix = self.prefix
        ok, values = await self._call(
            lambda: redisconn.mget(self.client, [prefix + k for k in keys])
        )
        if not ok or values is None:
            return [None] * len(keys)
        hits = sum(v is not None for v in values)
        self._count("hit", hits)
        self._count("miss", len(values) - hits)
        return list(values)

    async def set(self, key: str, value: bytes) -> None:
        await self._call(lambda: self.client.set(self.prefix + key, value, ex=self.ttl))

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(self.prefix + key, value, ex=self.ttl)
                await pipe.execute()

        await self._call(run)

    async def ping(self) -> bool:
        ok, _ = await self._call(self.client.ping)
        return ok

    async def close(self) -> None:
        await self.client.aclose()

    def describe(self) -> str:
        return f"redis at {redisconn.describe(self.url)} (ttl {self.ttl}s)"


class TieredCache:
    """A small in-process LRU of response bytes in front of Redis: the hottest keys skip the
    Redis round trip. Safe because keys carry the model version and a version never changes."""

    def __init__(self, local: LocalCache, remote: RedisCache) -> None:
        self.name = "tiered"
        self.local = local
        self.remote = remote

    async def get(self, key: str) -> bytes | None:
        value = await self.local.get(key)
        if value is None:
            value = await self.remote.get(key)
            if value is not None:
                self.local.put(key, value)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = await self.local.get_many(keys)
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            remote = await self.remote.get_many([keys[i] for i in missing])
            for i, value in zip(missing, remote, strict=True):
                if value is not None:
                    values[i] = value
                    self.local.put(keys[i], value)
        return values

    async def set(self, key: str, value: bytes) -> None:
        self.local.put(key, value)
        await self.remote.set(key, value)

    async def set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        await self.local.set_many(items)
        await self.remote.set_many(items)

    async def close(self) -> None:
        await self.local.close()
        await self.remote.close()

    def describe(self) -> str:
        return f"{self.remote.describe()} behind {self.local.describe()}"


class SingleFlight:
    """Concurrent calls for the same key share the first caller's result (one computation)."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future] = {}

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        while (flight := self._flights.get(key)) is not None:
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not flight.cancelled() or (task is not None and task.cancelling()):
                    raise
                # the leader was cancelled (its client went away): the next caller leads
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            result = await work()
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # mark it retrieved: there may be no follower to see it
            raise
        else:
            flight.set_result(result)
            return result
        finally:
            del self._flights[key]

    def __len__(self) -> int:
        return len(self._flights)


async def open_cache(settings: Settings, metrics: Metrics, *, local_entries: int = 4096) -> Cache:
    """The cache for this process, chosen once at startup and logged once.

    Redis when it answers a PING within 200 ms; with ``redis_url=auto`` and no Redis, an
    in-process LRU. An explicitly configured Redis that is down at start is still used: the
    breaker skips it until it answers, so the box picks it up when it comes back.
    """
    url = settings.redis_candidates()
    if url is None:
        cache: Cache = LocalCache(ttl=settings.cache_ttl, metrics=metrics)
        log.info("cache: in-process (Redis disabled)", extra={"cache": cache.describe()})
        return cache
    reachable = await redisconn.reachable(url)
    if not reachable and settings.redis_url == AUTO:
        cache = LocalCache(ttl=settings.cache_ttl, metrics=metrics)
        log.info("cache: in-process (Redis not reachable)", extra={"redis": url})
        return cache
    remote = RedisCache(
        url,
        settings.cache_ttl,
        metrics,
        namespace=Namespace.of(settings),
        timeout=settings.cache_timeout,
    )
    if local_entries > 0:
        cache = TieredCache(
            LocalCache(local_entries, min(60.0, settings.cache_ttl), metrics, "l1"), remote
        )
    else:
        cache = remote
    where = redisconn.describe(url)
    extra = {"cache": cache.describe(), "namespace": remote.prefix}
    if reachable:
        log.info(f"cache: redis at {where}", extra=extra)
    else:
        log.warning(
            f"cache: redis at {where} (not reachable yet; answering from the model until it is)",
            extra=extra,
        )
    return cache
