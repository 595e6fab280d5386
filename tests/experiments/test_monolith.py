"""In the monolith the aggregator runs in the web process; without Redis the counts live in the
var dir and the web side's buffer sinks into the recommender's ``LocalCounts``."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from recommender.experiments import EXPERIMENTS
from services.feedback.aggregate import add_batch
from services.platform.settings import Settings
from tests.conftest import Versions
from tests.experiments.conftest import MakeBatch, new_experiment
from tests.support import async_wait_until, get_json

ADMIN = {"Authorization": "Bearer test-admin-token"}


async def test_the_monolith_counts_the_stream_in_process(
    exp_settings: Settings,
    versions: Versions,
    serve_app: Callable[[web.Application], Awaitable[str]],
    http: aiohttp.ClientSession,
    make_batch: MakeBatch,
) -> None:
    from web_server.app import create_app

    app = create_app(exp_settings)
    url = await serve_app(app)
    feedback = app[EXPERIMENTS].feedback
    assert feedback is not None and feedback.redis is not None
    experiment = new_experiment(versions)
    await feedback.store.save(experiment)
    batch = make_batch(10, 3, version=versions.candidate, arm="candidate", experiment=experiment.id)
    await add_batch(feedback.redis, feedback.keys, batch, exp_settings.feedback_stream_max)

    async def counted() -> bool:
        status, body = await get_json(http, f"{url}/v1/experiments/current", headers=ADMIN)
        return status == 200 and body["arms"][1]["clicks"] == 3

    await async_wait_until(counted, 20, "the monolith's aggregator to count the batch")


async def test_without_redis_the_monolith_reports_from_its_local_counts(
    exp_settings: Settings,
    versions: Versions,
    serve_app: Callable[[web.Application], Awaitable[str]],
    http: aiohttp.ClientSession,
    make_batch: MakeBatch,
) -> None:
    from web_server.app import create_app

    settings = dataclasses.replace(exp_settings, redis_url="")
    app = create_app(settings)
    url = await serve_app(app)
    feedback = app[EXPERIMENTS].feedback
    assert feedback is not None and feedback.redis is None and feedback.local is not None
    experiment = new_experiment(versions)
    await feedback.store.save(experiment)
    await feedback.local.add(
        make_batch(4, 1, version=versions.control, arm="control", experiment=experiment.id)
    )
    status, body = await get_json(http, f"{url}/v1/experiments/current", headers=ADMIN)
    assert status == 200
    assert (body["arms"][0]["impressions"], body["arms"][0]["clicks"]) == (4, 1)
    assert (settings.var_dir / "feedback" / "counts.json").is_file()
