"""Redis for the recommender: which server plays which role, the key layout, and the clients.

Two roles, two URLs (the same server is fine in development):

- the **cache** (``MARQUEE_REDIS_URL``): results keyed by model version, a TTL on every key, so
  it may evict (``allkeys-lru``) and needs no persistence;
- the **state** (``MARQUEE_STATE_REDIS_URL``, the cache's URL when unset): the batch queue, jobs
  and their results, the model-publish channel. It must keep what it is given: ``noeviction``
  and AOF. :func:`durability` reads how the server is set up; the batch store and workers refuse
  to run on one that evicts.

Every key, stream and channel starts with ``marquee:<namespace>:`` (``MARQUEE_REDIS_NAMESPACE``,
by default derived from the install's var dir), so two installs sharing a Redis never see each
other's jobs.

Redis Cluster: a URL ``redis+cluster://host:port`` (or ``rediss+cluster://``) gets redis-py's
cluster client. The batch keys share one hash tag (``marquee:{<namespace>:batch}:...``) so
their transactions and the queue stay in one slot; cache keys have none and spread over the
cluster, and a multi-key read of them is split per slot (:func:`mget`). Pub/sub is broadcast
to every node of a cluster, so the channel is used over a plain connection to the seed node.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypedDict, Unpack, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from services.platform.settings import Settings

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
AsyncClient = aioredis.Redis | RedisCluster
# What "Redis is not there" looks like: the cluster client raises a few errors of its own (no
# node reachable, slot not covered) that are not RedisErrors.
FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


# ---- the key layout ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Namespace:
    """The prefixes of one install's keys, streams and channels."""

    name: str

    @property
    def cache(self) -> str:
        """Cache keys: ``<cache>:<model version>:<kind>:<args>`` (spread over a cluster)."""
        return f"marquee:{self.name}:rec:v1"

    @property
    def batch(self) -> str:
        """Batch keys: one hash tag, so each job's transaction and the queue share a slot."""
        return f"marquee:{{{self.name}:batch}}"

    @property
    def model_channel(self) -> str:
        """The pub/sub channel on which a published model version is announced."""
        return f"marquee:{self.name}:model:published"

    @classmethod
    def of(cls, settings: Settings) -> Namespace:
        return cls(settings.redis_namespace)


# ---- clients ----------------------------------------------------------------------------------
class ClientOptions(TypedDict, total=False):
    """The connection options Marquee's Redis clients are made with."""

    decode_responses: bool
    socket_timeout: float
    socket_connect_timeout: float
    socket_keepalive: bool
    health_check_interval: float
    retry: Retry


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def plain_url(url: str) -> str:
    """The URL redis-py understands: ``redis+cluster://h:p/0`` -> ``redis://h:p/0``."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    return urlunsplit(parts._replace(scheme=scheme)) if scheme else url


def connect(url: str, **options: Unpack[ClientOptions]) -> AsyncClient:
    """An asyncio client: the cluster client for a ``+cluster`` URL, else a plain one. Creating it
    does not connect; the first command does."""
    if is_cluster(url):
        return RedisCluster.from_url(plain_url(url), **options)
    return aioredis.Redis.from_url(url, **options)


def connect_node(url: str, **options: Unpack[ClientOptions]) -> aioredis.Redis:
    """A plain asyncio client to the URL's own host (a cluster's seed node): for pub/sub."""
    return aioredis.Redis.from_url(plain_url(url), **options)


def connect_node_sync(url: str, timeout: float) -> redis.Redis:
    """A plain blocking client to the URL's own host (the CLI's publish notice)."""
    return redis.Redis.from_url(
        plain_url(url), socket_timeout=timeout, socket_connect_timeout=timeout
    )


async def reachable(url: str, timeout: float = 0.2) -> bool:
    """One PING with a short deadline: decides at startup whether Redis is there."""
    client = connect(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout))
    except (*FAILURES, ValueError):
        return False
    finally:
        await client.aclose()


async def mget(client: AsyncClient, keys: list[str]) -> list[bytes | None]:
    """MGET, split per hash slot on a cluster (the keys of a batch lookup spread over nodes)."""
    if isinstance(client, RedisCluster):
        return cast(list[bytes | None], await client.mget_nonatomic(keys))
    return cast(list[bytes | None], await client.mget(keys))


# ---- durability ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Durability:
    """How a state Redis treats what it is given (every primary of a cluster)."""

    policy: str | None  # maxmemory-policy; None when the server does not say (CONFIG and INFO off)
    aof: bool | None  # appendonly on; None when unknown

    @property
    def evicts(self) -> bool:
        return self.policy is not None and self.policy != "noeviction"

    def describe(self) -> str:
        policy = self.policy or "unknown"
        aof = {True: "on", False: "off", None: "unknown"}[self.aof]
        return f"maxmemory-policy={policy}, appendonly={aof}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _node_durability(node: aioredis.Redis | RedisCluster, target: object) -> Durability:
    opts = {} if target is None else {"target_nodes": target}
    policy: str | None = None
    try:  # CONFIG is the documented way; managed services often disable or rename it
        reply = await node.execute_command("CONFIG", "GET", "maxmemory-policy", **opts)
        policy = _text(dict(_pairs(reply)).get("maxmemory-policy")) if reply else None
    except ResponseError:
        policy = None
    info: dict = {}
    try:  # INFO says the same and is rarely disabled
        info = await node.execute_command("INFO", "all", **opts)
    except ResponseError:
        info = {}
    if policy is None and "maxmemory_policy" in info:
        policy = _text(info["maxmemory_policy"])
    aof = bool(int(info["aof_enabled"])) if "aof_enabled" in info else None
    return Durability(policy, aof)


def _pairs(reply: object) -> list[tuple[str, object]]:
    """CONFIG GET's reply as pairs, whether redis-py made it a dict or left it a flat list."""
    if isinstance(reply, dict):
        return [(_text(k), v) for k, v in reply.items()]
    items = list(reply)  # type: ignore[call-overload]
    return [(_text(items[i]), items[i + 1]) for i in range(0, len(items) - 1, 2)]


async def durability(client: AsyncClient) -> Durability:
    """The weakest setup among the server's primaries: any evicting node evicts jobs."""
    if not isinstance(client, RedisCluster):
        return await _node_durability(client, None)
    await client.initialize()
    found = [await _node_durability(client, node) for node in client.get_primaries()]
    evicting = [d for d in found if d.evicts]
    unknown = [d for d in found if d.policy is None]
    policy = (evicting or unknown or found)[0].policy
    aofs = [d.aof for d in found]
    aof: bool | None = False if False in aofs else (None if None in aofs else True)
    return Durability(policy, aof)


def describe(url: str | None) -> str:
    """A URL for the log, without its password."""
    if not url:
        return "none"
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    return url
