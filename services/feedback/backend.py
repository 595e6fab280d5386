"""One process's feedback resources, chosen once at start: the experiment's store and the
counts' reader, on the state Redis when there is one, else in files of the var dir.

The recommender opens them in its cleanup_ctx (``app[FEEDBACK]``); the web side may open its
own with :func:`open_feedback`, or, in the monolith, use the recommender's: without Redis the
web side's impression buffer must sink into ``feedback.local`` (the same :class:`LocalCounts`
the report reads), so one process owns the counts file.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from recommender import redisconn
from recommender.redisconn import AsyncClient
from services.feedback.aggregate import CountsReader, LocalCounts, RedisAggregator, state_url
from services.feedback.schemas import FeedbackKeys
from services.feedback.state import ExperimentStore
from services.platform.settings import Settings

log = logging.getLogger("marquee.feedback")


def keys_of(settings: Settings) -> FeedbackKeys:
    return FeedbackKeys(settings.redis_namespace)


def experiment_path(settings: Settings) -> Path:
    """The experiment's file when there is no Redis."""
    return settings.var_dir / "feedback" / "experiment.json"


def counts_path(settings: Settings) -> Path:
    """The counts' file when there is no Redis."""
    return settings.var_dir / "feedback" / "counts.json"


def connect_state(url: str) -> AsyncClient:
    """A bytes client with short timeouts: a request that reads the experiment or the counts
    must not hang on a dead Redis (the store keeps its last reading instead)."""
    return redisconn.connect(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
    )


@dataclass
class Feedback:
    keys: FeedbackKeys
    store: ExperimentStore
    counts: CountsReader  # a RedisAggregator (reading only) or ``local``
    redis: AsyncClient | None
    local: LocalCounts | None  # the file sink and reader when there is no Redis
    where: str  # for the log and the dashboard

    async def close(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(*redisconn.FAILURES):
                await self.redis.aclose()


async def open_feedback(settings: Settings) -> Feedback:
    keys = keys_of(settings)
    url = await state_url(settings)
    if url is None:
        local = LocalCounts(counts_path(settings), keys)
        store = ExperimentStore(None, keys, experiment_path(settings))
        where = f"files in {experiment_path(settings).parent}"
        return Feedback(keys, store, local, None, local, where)
    client = connect_state(url)
    store = ExperimentStore(client, keys, experiment_path(settings))
    reader = RedisAggregator(client, keys)
    return Feedback(keys, store, reader, client, None, redisconn.describe(url))
