"""Batch jobs live on the *state* Redis and must not vanish: they are refused on a Redis that
evicts, kept across a restart of one with AOF, and never shared between two installs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from recommender.batch import BatchJobs, BatchKeys
from recommender.redisconn import durability
from services.platform.errors import NotReady
from services.platform.settings import Settings
from tests.batch.conftest import all_rows, wait_status
from tests.conftest import replace
from tests.support import Process, free_port, start_redis, wait_until

CSV = b"movie_id\n1\n2\n3\n"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Process]]]:
    """Start redis-servers of this test's own with the given options; stopped by PID after."""
    started: list[Process] = []

    def start(*options: str, port: int | None = None, workdir: Path | None = None):
        port = port or free_port()
        workdir = workdir or tmp_path / f"redis-{port}"
        workdir.mkdir(exist_ok=True)
        proc = start_redis(port, workdir, *options)
        started.append(proc)
        return f"redis://127.0.0.1:{port}/0", proc

    yield start
    for proc in started:
        proc.stop()


async def submit(settings: Settings, data: bytes = CSV) -> dict:
    client = aioredis.Redis.from_url(settings.state_redis_candidates(), decode_responses=True)
    try:
        return await BatchJobs(client, settings).submit(data, "m.csv", owner=7)
    finally:
        await client.aclose()


async def test_jobs_are_refused_on_a_redis_that_evicts(own_redis, batch_settings):
    url, _ = own_redis("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    settings = replace(batch_settings, redis_url=url)
    with pytest.raises(NotReady) as refused:
        await submit(settings)
    assert refused.value.code == "batch_unavailable"
    assert "maxmemory-policy=allkeys-lru" in refused.value.message
    plain = aioredis.Redis.from_url(url)
    assert await plain.dbsize() == 0  # nothing stored, nothing queued
    await plain.aclose()


async def test_the_policy_is_read_from_info_when_config_is_disabled(own_redis, batch_settings):
    """Managed Redis services often rename or remove CONFIG; INFO still tells the policy."""
    url, _ = own_redis("--maxmemory-policy", "volatile-lru", "--rename-command", "CONFIG", "")
    client = aioredis.Redis.from_url(url)
    found = await durability(client)
    await client.aclose()
    assert (found.policy, found.evicts) == ("volatile-lru", True)
    with pytest.raises(NotReady, match="volatile-lru"):
        await submit(replace(batch_settings, redis_url=url))


async def test_a_separate_state_redis_takes_the_jobs_while_the_cache_evicts(
    own_redis, batch_settings, start_worker
):
    """Two roles, two servers: an evicting cache beside a noeviction + AOF state Redis."""
    cache_url, _ = own_redis("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    state_url, _ = own_redis("--appendonly", "yes")
    settings = replace(batch_settings, redis_url=cache_url, state_redis_url=state_url)
    job = await submit(settings)
    proc = start_worker(redis_url=cache_url, state_redis_url=state_url)
    client = aioredis.Redis.from_url(state_url, decode_responses=True)
    try:
        done = await wait_status(BatchJobs(client, settings), job.job_id, proc=proc)
    finally:
        await client.aclose()
    assert done.result_rows > 0
    cache = aioredis.Redis.from_url(cache_url)
    assert await cache.dbsize() == 0  # no batch key on the cache's server
    await cache.aclose()


def test_a_worker_process_refuses_an_evicting_redis(own_redis, start_worker):
    url, _ = own_redis("--maxmemory-policy", "allkeys-random")
    proc = start_worker(redis_url=url)
    wait_until(lambda: proc.proc.poll() is not None, 60, "the worker to refuse and exit")
    assert proc.proc.returncode == 2
    assert "maxmemory-policy=allkeys-random" in proc.log_tail()


async def test_jobs_and_results_survive_a_redis_restart_with_aof(
    own_redis, batch_settings, start_worker, tmp_path
):
    port, workdir = free_port(), tmp_path / "durable"
    url, server = own_redis(
        "--appendonly", "yes", "--appendfsync", "always", port=port, workdir=workdir
    )
    settings = replace(batch_settings, redis_url=url)
    finished = await submit(settings)
    proc = start_worker(redis_url=url)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    jobs = BatchJobs(client, settings)
    try:
        await wait_status(jobs, finished.job_id, proc=proc)
        rows = await all_rows(jobs, finished.job_id)
        proc.stop()
        waiting = await submit(settings)  # queued while no worker runs
        await client.aclose()

        server.kill()  # SIGKILL: no shutdown save; only the AOF has it
        own_redis("--appendonly", "yes", port=port, workdir=workdir)
        client = aioredis.Redis.from_url(url, decode_responses=True)
        jobs = BatchJobs(client, settings)
        assert await all_rows(jobs, finished.job_id) == rows
        assert (await jobs.status(waiting.job_id)).status == "queued"
        assert await jobs.queue_depth() == 1
        proc = start_worker(redis_url=url)  # the queue goes on where it was
        assert (await wait_status(jobs, waiting.job_id, proc=proc)).result_rows > 0
    finally:
        await client.aclose()


async def test_two_installs_on_one_redis_do_not_share_jobs(batch_settings, tmp_path, redis_url):
    # another install: its own var dir, its namespace derived from it
    other = replace(batch_settings, redis_namespace="", var_dir=tmp_path / "other-install")
    assert other.redis_namespace != batch_settings.redis_namespace
    assert BatchKeys.of(other).stream != BatchKeys.of(batch_settings).stream
    job = await submit(batch_settings)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await BatchJobs(client, batch_settings).queue_depth() == 1
        assert await BatchJobs(client, other).queue_depth() == 0
        with pytest.raises(Exception, match="no batch job"):
            await BatchJobs(client, other).status(job.job_id)
    finally:
        await client.aclose()


def test_the_namespace_is_derived_from_the_var_dir_unless_set(tmp_path):
    a, b = Settings(var_dir=tmp_path / "a"), Settings(var_dir=tmp_path / "b")
    assert a.redis_namespace != b.redis_namespace
    assert a.redis_namespace == Settings(var_dir=tmp_path / "a").redis_namespace
    assert Settings(var_dir=tmp_path / "a", redis_namespace="prod").redis_namespace == "prod"
