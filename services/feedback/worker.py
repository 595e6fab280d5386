"""Where the aggregator runs: beside the batch loop in ``python -m recommender worker``, and as a
background task of the monolith (``aggregator_ctx``). Any number may run at once: the consumer
group shares the entries out and the counting script makes each count once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from recommender import redisconn
from services.feedback.aggregate import RedisAggregator, default_consumer, state_url
from services.feedback.backend import keys_of
from services.platform.app import SETTINGS
from services.platform.background import running
from services.platform.settings import Settings

log = logging.getLogger("marquee.feedback")

BLOCK = 1.0  # seconds an XREADGROUP waits for new entries (and how soon a stop is seen)


async def run_aggregator(
    settings: Settings, stop: asyncio.Event, consumer: str | None = None
) -> None:
    """Count feedback until ``stop`` is set. No state Redis: nothing to consume (the web
    process counts in-process into the var dir), so it returns at once."""
    url = await state_url(settings)
    if url is None:
        log.info("feedback aggregator off: no state Redis (counts are kept in the var dir)")
        return
    client = redisconn.connect(
        url, socket_connect_timeout=2.0, socket_timeout=BLOCK + 5.0, health_check_interval=30
    )
    aggregator = RedisAggregator(
        client,
        keys_of(settings),
        consumer=consumer or default_consumer(),
        claim_idle=settings.feedback_claim_idle,
        block=BLOCK,
    )
    try:
        await aggregator.run(stop)
    finally:
        with contextlib.suppress(*redisconn.FAILURES):
            await client.aclose()


async def aggregator_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx for the monolith: the aggregator as a background task of the web process."""
    settings = app[SETTINGS]
    consumer = f"monolith-{default_consumer()}"
    async with running(
        lambda stop: run_aggregator(settings, stop, consumer),
        "feedback aggregator",
        settings.shutdown_timeout,
    ):
        yield
