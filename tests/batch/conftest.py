"""Fixtures for the batch tests: the job store on the real Redis, real worker processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from recommender.batch import BatchJobs, BatchKeys
from recommender.registry import ModelRegistry
from recommender.schemas import BatchJob, BatchRow
from services.platform.settings import Settings
from tests.conftest import replace
from tests.support import PYTHON, Process, async_wait_until, marquee_env

WORKER_ARGS = [PYTHON, "-m", "recommender", "worker"]


@pytest.fixture(scope="session")
def loaded_model(model_dir: Path):
    """The published model and its manifest, as the worker will load them."""
    return ModelRegistry(model_dir).load()


@pytest.fixture
def batch_settings(settings: Settings) -> Settings:
    """Settings with a short reclaim time, so a dead worker's job moves on within a second."""
    return replace(settings, batch_claim_idle=1.0, batch_chunk_size=100, batch_ttl=600)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def batch_keys(batch_settings: Settings) -> BatchKeys:
    """Where this test's install keeps its batch jobs and queue."""
    return BatchKeys.of(batch_settings)


@pytest.fixture
def jobs(redis_client: aioredis.Redis, batch_settings: Settings) -> BatchJobs:
    return BatchJobs(redis_client, batch_settings)


def worker_env(settings: Settings, **changes: object) -> dict[str, str]:
    """A worker process reading the same store and models as ``settings``; ``changes`` are
    settings fields (e.g. ``batch_chunk_pause=0.04``)."""
    fields = {
        "redis_url": settings.redis_url,
        "model_dir": settings.model_dir,
        "var_dir": settings.var_dir,
        "batch_claim_idle": settings.batch_claim_idle,
        "log_level": "INFO",
    }
    return marquee_env(**{**fields, **changes})


@pytest.fixture
def start_worker(batch_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start ``python -m recommender worker`` processes; every one is stopped by PID at the end."""
    started: list[Process] = []

    def start(**changes: object) -> Process:
        n = len(started)
        proc = Process(
            WORKER_ARGS, worker_env(batch_settings, **changes), tmp_path / f"worker-{n}.log"
        ).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


async def wait_status(
    jobs: BatchJobs,
    job_id: str,
    wanted: str = "done",
    timeout: float = 30.0,
    proc: Process | None = None,
) -> BatchJob:
    """Poll the job until it reaches ``wanted`` (a worker log tail in the failure message)."""
    last: BatchJob | None = None

    async def reached() -> bool:
        nonlocal last
        last = await jobs.status(job_id)
        return last.status == wanted

    try:
        await async_wait_until(reached, timeout, f"job {job_id} {wanted}")
    except TimeoutError as exc:
        tail = proc.log_tail() if proc else ""
        raise AssertionError(f"{exc}; last status {last}\nworker log:\n{tail}") from None
    assert last is not None
    return last


async def all_rows(jobs: BatchJobs, job_id: str) -> list[BatchRow]:
    """A finished job's result rows, in order."""
    await jobs.finished(job_id)
    return [row async for chunk in jobs.result_chunks(job_id) for row in chunk]


async def job_ttls(client: aioredis.Redis, batch: BatchKeys, job_id: str) -> dict[str, int]:
    keys = [batch.job(job_id), batch.input(job_id), batch.results(job_id), batch.counts(job_id)]
    return {key: await client.ttl(key) for key in keys}
