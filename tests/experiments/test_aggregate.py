"""The Redis aggregator: each batch counted exactly once whatever the delivery does, malformed
entries dropped and tallied, the stream bounded, a dead Redis waited out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from recommender import redisconn
from recommender.redisconn import AsyncClient
from services.feedback.aggregate import RedisAggregator, add_batch
from services.feedback.schemas import FeedbackKeys
from tests.experiments.conftest import MINUTE, MakeBatch
from tests.support import async_wait_until, free_port, start_redis

KEYS = FeedbackKeys("agg")
CONTROL = KEYS.counts("e1", "control", "v1")


def aggregator(state: AsyncClient, name: str = "a", claim_idle: float = 30.0) -> RedisAggregator:
    return RedisAggregator(state, KEYS, consumer=name, claim_idle=claim_idle, block=0.05)


async def drain(agg: RedisAggregator) -> None:
    """Steps until a round finds nothing to do."""
    while await agg.step():
        pass


async def test_counts_impressions_clicks_and_minutes(
    state: AsyncClient, make_batch: MakeBatch
) -> None:
    agg = aggregator(state)
    await agg.ensure_group()
    await add_batch(state, KEYS, make_batch(impressions=3, clicks=2), 1000)
    await add_batch(state, KEYS, make_batch(impressions=1, arm="candidate", version="v2"), 1000)
    await drain(agg)
    assert await agg.read(CONTROL) == {
        "impressions": 3,
        "clicks": 2,
        f"i:{MINUTE}": 3,
        f"c:{MINUTE}": 2,
    }
    assert (await agg.read(KEYS.counts("e1", "candidate", "v2")))["impressions"] == 1
    assert (await agg.backlog()).pending == 0


async def test_a_batch_added_twice_counts_once(state: AsyncClient, make_batch: MakeBatch) -> None:
    agg = aggregator(state)
    await agg.ensure_group()
    batch = make_batch(impressions=5, clicks=1)
    await add_batch(state, KEYS, batch, 1000)
    await add_batch(state, KEYS, batch, 1000)  # a retried XADD
    await drain(agg)
    assert (await agg.read(CONTROL))["impressions"] == 5
    assert (await agg.read(CONTROL))["clicks"] == 1
    assert (await agg.stats())["duplicates"] == 1
    assert (await agg.backlog()).pending == 0  # both entries acknowledged


async def test_an_entry_delivered_twice_counts_once(
    state: AsyncClient, make_batch: MakeBatch
) -> None:
    slow, fast = aggregator(state, "slow"), aggregator(state, "fast", claim_idle=0)
    await slow.ensure_group()
    for _ in range(10):
        await add_batch(state, KEYS, make_batch(impressions=2, clicks=1), 1000)
    delivered = await state.xreadgroup(KEYS.group, "slow", {KEYS.stream: ">"}, count=100)
    messages = delivered[0][1]
    assert len(messages) == 10
    assert await fast.claim() == 10  # "slow" looked dead: "fast" takes and counts them all
    await slow.count(messages)  # ... then "slow" wakes up and counts what it had read
    assert (await fast.read(CONTROL))["impressions"] == 20
    assert (await fast.read(CONTROL))["clicks"] == 10
    assert slow.tally.not_pending == 10 and slow.tally.counted == 0


async def test_malformed_entries_are_acknowledged_tallied_and_skipped(
    state: AsyncClient, make_batch: MakeBatch
) -> None:
    agg = aggregator(state)
    await agg.ensure_group()
    for fields in (
        {b"b": b"not json"},
        {b"b": b"\xff\xfe\xfd"},
        {b"b": b'{"id": "x", "events": [{"type": "impression"}]}'},
        {b"b": b'{"id": "x", "events": [{"type": "click", "arm": "sideways"}]}'},
        {b"other": b"field"},
    ):
        await state.xadd(KEYS.stream, fields)
    await add_batch(state, KEYS, make_batch(impressions=2), 1000)
    await drain(agg)
    assert (await agg.stats())["malformed"] == 5
    assert agg.tally.malformed == 5
    assert (await agg.read(CONTROL))["impressions"] == 2
    assert (await agg.backlog()).pending == 0


async def test_the_stream_is_bounded(state: AsyncClient, make_batch: MakeBatch) -> None:
    for _ in range(1500):
        await add_batch(state, KEYS, make_batch(), 300)
    length = await state.xlen(KEYS.stream)
    # MAXLEN ~ trims whole macro-nodes (100 entries each by default): at most one node over
    assert 300 <= length <= 400, length


async def test_entries_trimmed_before_counting_are_not_a_crash(
    state: AsyncClient, make_batch: MakeBatch
) -> None:
    agg = aggregator(state, claim_idle=0)
    await agg.ensure_group()
    for _ in range(5):
        await add_batch(state, KEYS, make_batch(), 1000)
    await state.xreadgroup(KEYS.group, "gone", {KEYS.stream: ">"}, count=100)  # pending
    await state.xtrim(KEYS.stream, maxlen=0)  # dropped by the bound while pending
    await drain(agg)
    assert (await agg.backlog()).pending == 0
    assert await agg.read(CONTROL) == {}


async def test_the_loop_waits_out_a_dead_redis_then_counts(
    tmp_path: Path, make_batch: MakeBatch
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    client = redisconn.connect(url, socket_timeout=2.0, socket_connect_timeout=0.5)
    stop = asyncio.Event()
    agg = aggregator(client)
    task = asyncio.create_task(agg.run(stop))
    server = None
    try:

        async def failing() -> bool:
            return agg.failed_rounds >= 3

        await async_wait_until(failing, 20, "rounds to fail with nothing listening")
        assert not task.done()
        server = start_redis(port, tmp_path)
        await add_batch(client, KEYS, make_batch(impressions=4), 1000)

        async def counted() -> bool:
            return (await agg.read(CONTROL)).get("impressions") == 4

        await async_wait_until(counted, 20, "the batch to be counted once Redis is up")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        if server is not None:
            server.stop()


async def test_the_report_reads_what_was_counted(state: AsyncClient, make_batch: MakeBatch) -> None:
    from services.feedback.report import experiment_report
    from services.feedback.schemas import Experiment

    agg = aggregator(state)
    await agg.ensure_group()
    await add_batch(state, KEYS, make_batch(impressions=80, clicks=48), 1000)
    await add_batch(
        state, KEYS, make_batch(impressions=70, clicks=56, arm="candidate", version="v2"), 1000
    )
    await drain(agg)
    experiment = Experiment("e1", "v1", "v2", 0.5, "salt", "2026-12-07T07:00:00Z")
    report = await experiment_report(experiment, agg.read)  # default keys: any namespace
    control, candidate = report.arms
    assert (control.impressions, control.clicks, candidate.impressions, candidate.clicks) == (
        80,
        48,
        70,
        56,
    )
    assert candidate.series[0].minute == MINUTE and candidate.series[0].clicks == 56
    assert round(report.difference.low, 4) == 0.0524  # Newcombe 1998, Table II (a)
    assert round(report.difference.high, 4) == 0.3339
    assert msgspec.json.decode(msgspec.json.encode(report))["arms"][1]["version"] == "v2"


async def test_a_deleted_stream_is_recreated_and_counting_goes_on(
    state: AsyncClient, make_batch: MakeBatch
) -> None:
    agg = aggregator(state)
    stop = asyncio.Event()
    task = asyncio.create_task(agg.run(stop))
    try:
        await add_batch(state, KEYS, make_batch(impressions=1), 1000)

        async def counted(n: int) -> bool:
            return (await agg.read(CONTROL)).get("impressions") == n

        await async_wait_until(lambda: counted(1), 20, "the first batch to be counted")
        await state.delete(KEYS.stream)  # group and all: the next read fails with NOGROUP
        await async_wait_until(
            lambda: state.exists(KEYS.stream), 20, "the aggregator to recreate its group"
        )
        await add_batch(state, KEYS, make_batch(impressions=2), 1000)
        await async_wait_until(lambda: counted(3), 20, "a batch after the deletion counted")
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
