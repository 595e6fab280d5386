"""``experiment promote`` under load: two recommender processes serving both arms swap every
arm to the candidate with zero failed requests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from recommender.experiment_cli import start
from services.platform.settings import Settings
from tests.conftest import Versions
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

QUERIES = ("?k=5", "?arm=control&k=5", "?arm=candidate&k=5")


async def version_of(http: aiohttp.ClientSession, base: str, query: str) -> str | None:
    try:
        status, body = await get_json(http, f"{base}/v1/similar/1{query}")
    except aiohttp.ClientError:
        return None
    return body.get("model_version") if status == 200 else None


async def test_promote_swaps_every_arm_with_zero_failed_requests(
    versions: Versions, redis_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    var_dir = tmp_path / "var"
    common = {
        "host": "127.0.0.1",
        "model_dir": versions.models,
        "var_dir": var_dir,
        "redis_url": redis_url,
        "model_poll_interval": 300,  # only the publish notice can make them swap in time
    }
    ports = [free_port(), free_port()]
    servers = [
        Process(
            [PYTHON, "-m", "recommender", "serve"],
            marquee_env(recommender_port=port, **common),
            tmp_path / f"serve-{port}.log",
        ).start()
        for port in ports
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    stop = asyncio.Event()
    answers: list[Answer] = []
    loops: list[asyncio.Task] = []
    try:
        settings = Settings(var_dir=var_dir, redis_url=redis_url, model_dir=versions.models)
        await start(settings, versions.registry, versions.control, versions.candidate, 0.5)
        for base in bases:

            async def arms_served(base: str = base) -> bool:
                return (
                    await version_of(http, base, "?arm=candidate") == versions.candidate
                    and await version_of(http, base, "?arm=control") == versions.control
                )

            await async_wait_until(arms_served, 60, f"{base} to serve both arms")

        model = versions.registry.load(versions.control)[0]
        movies = [int(m) for m in model.item_ids[:300]]
        del model
        loops = [
            asyncio.create_task(
                similar_load(http, bases, movies, answers, stop, seed=seed, queries=QUERIES)
            )
            for seed in range(8)
        ]

        async def answered(n: int) -> None:
            target = len(answers) + n

            async def enough() -> bool:
                return len(answers) >= target

            await async_wait_until(enough, 30, f"{n} more answers")

        await answered(100)
        promote = Process(
            [PYTHON, "-m", "recommender", "experiment", "promote"],
            marquee_env(**common),
            tmp_path / "promote.log",
        ).start()
        assert promote.proc is not None
        assert await asyncio.to_thread(promote.proc.wait, 60) == 0, promote.log_tail()

        async def all_swapped() -> bool:
            for base in bases:
                for query in QUERIES:
                    if await version_of(http, base, query) != versions.candidate:
                        return False
            return True

        await async_wait_until(all_swapped, 30, "every server to serve the candidate to all")
        swapped = time.monotonic()
        await answered(100)
        stop.set()
        await asyncio.gather(*loops)

        failures = [a for a in answers if a.status != 200]
        assert not failures, failures[:5]
        assert {a.version for a in answers} == {versions.control, versions.candidate}
        after = [a for a in answers if a.started > swapped]
        assert after and {a.version for a in after} == {versions.candidate}
        assert len(answers) >= 200
        print(f"promote under load: {len(answers)} requests on 2 processes, 0 failed")
    finally:
        stop.set()
        for task in loops:
            task.cancel()
        for server in servers:
            code = server.stop()
            if code not in (0, -15):
                print(server.log_tail())
