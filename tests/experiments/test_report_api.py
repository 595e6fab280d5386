"""``GET /v1/experiments/current`` (admin token) and the experiment in ``/metrics``."""

from __future__ import annotations

import aiohttp
import msgspec

from services.feedback.aggregate import RedisAggregator, add_batch
from services.feedback.schemas import ExperimentReport
from tests.conftest import Versions
from tests.experiments.conftest import MakeBatch, Served, new_experiment
from tests.support import get_json

ADMIN = {"Authorization": "Bearer test-admin-token"}
URL = "/v1/experiments/current"


async def feed(served: Served, versions: Versions, experiment: str, make_batch: MakeBatch) -> None:
    """Count 80 control views with 48 clicks and 70 candidate views with 56 clicks."""
    feedback = served.feedback
    assert feedback.redis is not None
    aggregator = RedisAggregator(feedback.redis, feedback.keys, consumer="t", block=0.05)
    await aggregator.ensure_group()
    for batch in (
        make_batch(80, 48, version=versions.control, arm="control", experiment=experiment),
        make_batch(70, 56, version=versions.candidate, arm="candidate", experiment=experiment),
    ):
        await add_batch(feedback.redis, feedback.keys, batch, 1000)
    while await aggregator.step():
        pass


async def test_the_report_needs_the_admin_token(
    served: Served, http: aiohttp.ClientSession
) -> None:
    status, body = await get_json(http, f"{served.url}{URL}")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await get_json(
        http, f"{served.url}{URL}", headers={"Authorization": "Bearer wrong"}
    )
    assert status == 403 and body["error"]["code"] == "forbidden"


async def test_no_experiment_is_a_404(served: Served, http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, f"{served.url}{URL}", headers=ADMIN)
    assert status == 404 and body["error"]["code"] == "no_experiment"


async def test_the_report_gives_counts_intervals_and_the_difference(
    served: Served, versions: Versions, http: aiohttp.ClientSession, make_batch: MakeBatch
) -> None:
    experiment = new_experiment(versions)
    await served.feedback.store.save(experiment)
    await feed(served, versions, experiment.id, make_batch)
    async with http.get(f"{served.url}{URL}", headers=ADMIN) as resp:
        assert resp.status == 200
        report = msgspec.json.decode(await resp.read(), type=ExperimentReport)
    control, candidate = report.arms
    assert (control.version, control.impressions, control.clicks) == (versions.control, 80, 48)
    assert (candidate.version, candidate.impressions, candidate.clicks) == (
        versions.candidate,
        70,
        56,
    )
    assert round(control.ctr.estimate, 4) == 0.6 and control.ctr.low < 0.6 < control.ctr.high
    assert (round(report.difference.low, 4), round(report.difference.high, 4)) == (0.0524, 0.3339)


async def test_metrics_show_the_arms_and_the_backlog(
    served: Served, versions: Versions, http: aiohttp.ClientSession, make_batch: MakeBatch
) -> None:
    experiment = new_experiment(versions)
    await served.feedback.store.save(experiment)
    await feed(served, versions, experiment.id, make_batch)
    async with http.get(f"{served.url}/metrics") as resp:
        text = await resp.text()
    c, t = versions.control, versions.candidate
    assert f'marquee_experiment_impressions{{arm="control",version="{c}"}} 80.0' in text
    assert f'marquee_experiment_clicks{{arm="candidate",version="{t}"}} 56.0' in text
    assert f'marquee_experiment_ctr{{arm="candidate",bound="estimate",version="{t}"}} 0.8' in text
    assert 'marquee_experiment_ctr_difference{bound="low"} 0.0524' in text
    assert "marquee_experiment_running 1.0" in text
    assert 'marquee_feedback_backlog{kind="pending"} 0.0' in text
    assert "marquee_feedback_malformed 0.0" in text


async def test_the_report_is_in_the_openapi_document(
    served: Served, http: aiohttp.ClientSession
) -> None:
    status, doc = await get_json(http, f"{served.url}/openapi.json")
    assert status == 200
    operation = doc["paths"][URL]["get"]
    assert operation["security"] == [{"bearer": []}]
    assert {"200", "401", "403", "404"} <= set(operation["responses"])
    arm = next(
        p for p in doc["paths"]["/v1/similar/{movie_id}"]["get"]["parameters"] if p["name"] == "arm"
    )
    assert arm["schema"]["enum"] == ["control", "candidate"]
