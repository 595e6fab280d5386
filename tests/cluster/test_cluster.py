"""Marquee on a real 3-node Redis Cluster (``redis+cluster://``): the cache spreads over the nodes
and reads across slots, batch jobs run (their keys in one slot), model notices reach every box."""

from __future__ import annotations

import asyncio
import dataclasses

from recommender.app import WATCHER
from recommender.batch import BatchKeys
from recommender.batch_api import setup_batch_api
from recommender.batch_worker import batch_worker_ctx
from recommender.cache import RedisCache, cache_key
from recommender.redisconn import Namespace, connect, durability
from recommender.reload import notify_published
from services.platform.app import create_base_app
from services.platform.settings import Settings
from tests.cluster.conftest import Cluster
from tests.recommender.test_service import copy_registry, republish, start
from tests.support import SERVICE, async_wait_until, get_json


def on_cluster(settings: Settings, cluster: Cluster, **changes: object) -> Settings:
    return dataclasses.replace(settings, redis_url=cluster.url, **changes)


async def test_cache_keys_spread_over_the_nodes_and_a_batch_read_spans_slots(cluster):
    cache = RedisCache(cluster.url, ttl=60, namespace=Namespace("spread"))
    try:
        items = [(cache_key("v1", "similar", f"{i}:10"), str(i).encode()) for i in range(60)]
        await cache.set_many(items)
        got = await cache.get_many([key for key, _ in items] + ["v1:similar:nope:10"])
        assert got == [value for _, value in items] + [None]
        assert await cache.get(items[0][0]) == b"0"
        assert cache.errors == 0
    finally:
        await cache.close()
    assert all(cluster.keys_per_node()), cluster.keys_per_node()  # every node holds some


async def test_the_recommender_serves_and_caches_through_the_cluster(settings, cluster, http):
    first = await start(on_cluster(settings, cluster))
    try:
        ids = ",".join(str(m) for m in range(1, 40))
        status, body = await get_json(http, f"{first.url}/v1/similar?ids={ids}&k=5")
        assert status == 200 and body["results"]
        assert {r["source"] for r in body["results"]} <= {"collaborative", "blend", "content"}
        assert first.box.cache.remote.errors == 0
    finally:
        await first.server.close()
    assert sum(cluster.keys_per_node()) >= len(body["results"])
    # a second box (empty in-process layer) reads all of them back from the cluster at once
    second = await start(on_cluster(settings, cluster))
    try:
        status, again = await get_json(http, f"{second.url}/v1/similar?ids={ids}&k=5")
        assert status == 200
        assert {r["source"] for r in again["results"]} == {"cache"}
        assert [r["items"] for r in again["results"]] == [r["items"] for r in body["results"]]
    finally:
        await second.server.close()


async def test_a_model_notice_sent_to_another_node_reloads_the_box(
    settings, cluster, model_dir, tmp_path
):
    models = copy_registry(model_dir, tmp_path)
    rec = await start(on_cluster(settings, cluster, model_dir=models, model_poll_interval=300))
    try:
        watcher = rec.server.app[WATCHER]

        async def subscribed() -> bool:
            return watcher.subscribed.is_set()

        await async_wait_until(subscribed, 10, "the watcher to subscribe")
        v2 = await asyncio.to_thread(republish, models)
        other_node = f"redis+cluster://127.0.0.1:{cluster.ports[2]}/0"
        # the count is that node's own subscribers (none); the cluster bus carries the message on
        assert await notify_published(other_node, v2, Namespace.of(settings)) == 0

        async def reloaded() -> bool:
            return rec.box.version == v2

        await async_wait_until(reloaded, 10, "the notice's reload")
    finally:
        await rec.server.close()


async def test_batch_jobs_run_on_the_cluster_with_their_keys_in_one_slot(
    settings, cluster, serve_app, http
):
    settings = on_cluster(settings, cluster, batch_chunk_size=2)
    app = create_base_app(settings, "recommender")
    setup_batch_api(app)
    app.cleanup_ctx.append(batch_worker_ctx)
    base = await serve_app(app)
    async with http.post(
        f"{base}/v1/batch?k=3",
        data=b"movie_id\n1\n2\n3\n4\n5\n",
        headers={"Content-Type": "text/csv", **SERVICE},
    ) as resp:
        assert resp.status == 202, await resp.text()
        job = await resp.json()

    finished: dict = {}

    async def done() -> bool:
        nonlocal finished
        status, finished = await get_json(http, f"{base}/v1/batch/{job['job_id']}")
        assert status == 200, finished
        return finished["status"] == "done"

    await async_wait_until(done, 30, "the job to finish on the cluster")
    status, results = await get_json(http, f"{base}/v1/batch/{job['job_id']}/results")
    assert status == 200 and len(results["items"]) == finished["result_rows"] > 0
    assert {row["row"] for row in results["items"]} >= {1, 3, 5}  # from all 3 chunks (2 rows each)

    prefix = BatchKeys.of(settings).prefix
    slots = set()
    for i in range(len(cluster.ports)):
        node = cluster.node(i)
        for key in node.scan_iter(match=prefix + ":*"):
            slots.add(node.cluster("KEYSLOT", key))
        node.close()
    assert len(slots) == 1  # job, input, results, counts and the queue share one slot


async def test_durability_is_read_from_every_primary(cluster):
    client = connect(cluster.url)
    try:
        found = await durability(client)
    finally:
        await client.aclose()
    assert found.policy == "noeviction" and not found.evicts
    assert found.aof is False  # the test cluster keeps nothing on disk: the log warns


async def test_feedback_is_counted_on_the_cluster_with_its_keys_in_one_slot(cluster):
    import uuid

    from services.feedback.aggregate import RedisAggregator, add_batch
    from services.feedback.schemas import Click, EventBatch, FeedbackKeys, Impression

    keys = FeedbackKeys("clusterfb")
    client = connect(cluster.url)
    try:
        aggregator = RedisAggregator(client, keys, consumer="c", block=0.05)
        await aggregator.ensure_group()
        events: list[Impression | Click] = [
            Impression(uuid.uuid4().hex, "v1", "e1", "control", [1, 2], 1.7e9) for _ in range(3)
        ]
        events.append(Click(uuid.uuid4().hex, "v1", "e1", "control", 2, 2, 1.7e9))
        batch = EventBatch(uuid.uuid4().hex, events)
        await add_batch(client, keys, batch, 1000)
        await add_batch(client, keys, batch, 1000)  # added twice: counted once
        while await aggregator.step():
            pass
        counts = await aggregator.read(keys.counts("e1", "control", "v1"))
        assert (counts["impressions"], counts["clicks"]) == (3, 1)
        assert (await aggregator.stats())["duplicates"] == 1
    finally:
        await client.aclose()
    slots = set()
    for i in range(len(cluster.ports)):
        node = cluster.node(i)
        for key in node.scan_iter(match=keys.prefix + ":*"):
            slots.add(node.cluster("KEYSLOT", key))
        node.close()
    assert len(slots) == 1  # stream, markers, counts and tallies: one slot for the script
