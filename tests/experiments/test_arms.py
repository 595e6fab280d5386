"""The recommender serves each experiment arm its version, over HTTP and in-process; a broken
arm falls back to the published version and says so; a bad arm is a 400."""

from __future__ import annotations

import aiohttp
import msgspec

from tests.conftest import Versions
from tests.experiments.conftest import Served, new_experiment, tamper
from tests.support import async_wait_until, get_json


async def served_by(http: aiohttp.ClientSession, url: str, query: str = "") -> str:
    status, body = await get_json(http, f"{url}/v1/similar/1{query}")
    assert status == 200, body
    return body["model_version"]


async def test_each_arm_gets_its_version_over_http(
    served: Served, versions: Versions, http: aiohttp.ClientSession
) -> None:
    await served.feedback.store.save(new_experiment(versions))

    async def candidate_served() -> bool:
        return await served_by(http, served.url, "?arm=candidate&k=5") == versions.candidate

    await async_wait_until(candidate_served, 20, "the candidate arm to get its version")
    assert await served_by(http, served.url, "?arm=control&k=5") == versions.control
    assert await served_by(http, served.url, "?k=5") == versions.control  # no arm: published
    assert await served_by(http, served.url, "?arm=candidate") == versions.candidate  # k default


async def test_the_in_process_call_serves_the_arm(served: Served, versions: Versions) -> None:
    await served.feedback.store.save(new_experiment(versions))
    await served.box.sync_arms()
    similar = await served.box.similar(1, 5, arm="candidate")
    assert similar.model_version == versions.candidate and len(similar.items) == 5
    assert (await served.box.similar(1, 5, arm="control")).model_version == versions.control
    assert (await served.box.similar(1, 5)).model_version == versions.control


async def test_without_an_experiment_every_arm_gets_the_published_version(
    served: Served, versions: Versions, http: aiohttp.ClientSession
) -> None:
    assert await served_by(http, served.url, "?arm=candidate") == versions.control
    assert await served_by(http, served.url, "?arm=control") == versions.control


async def test_a_stopped_experiment_serves_the_published_version_and_unloads_its_arm(
    served: Served, versions: Versions, http: aiohttp.ClientSession
) -> None:
    experiment = new_experiment(versions)
    await served.feedback.store.save(experiment)
    assert await served.box.sync_arms() == [versions.candidate]
    await served.feedback.store.save(
        msgspec.structs.replace(experiment, stopped="2026-12-07T08:00:00Z")
    )
    assert await served.box.sync_arms() == []
    assert await served_by(http, served.url, "?arm=candidate") == versions.control


async def test_a_bogus_arm_is_a_400(served: Served, http: aiohttp.ClientSession) -> None:
    for query in ("?arm=bogus", "?arm=", "?arm=CONTROL&k=5"):
        status, body = await get_json(http, f"{served.url}/v1/similar/1{query}")
        assert status == 400, query
        assert body["error"]["code"] == "invalid_arm"


async def test_a_bad_k_with_an_arm_is_still_a_400(
    served: Served, http: aiohttp.ClientSession
) -> None:
    status, body = await get_json(http, f"{served.url}/v1/similar/1?arm=control&k=0")
    assert status == 400 and body["error"]["code"] == "invalid_param"


async def test_an_arm_whose_version_fails_its_check_gets_the_published_version(
    served: Served, versions: Versions, http: aiohttp.ClientSession
) -> None:
    tamper(versions.models, versions.candidate)
    await served.feedback.store.save(new_experiment(versions))
    assert await served.box.sync_arms() == []
    assert versions.candidate in served.box.arm_refused
    assert await served_by(http, served.url, "?arm=candidate") == versions.control
    assert await served_by(http, served.url, "?arm=control") == versions.control


async def test_an_arm_tampered_after_loading_falls_back_at_the_scheduled_check(
    served: Served, versions: Versions, http: aiohttp.ClientSession
) -> None:
    await served.feedback.store.save(new_experiment(versions))
    assert await served.box.sync_arms() == [versions.candidate]
    tamper(versions.models, versions.candidate)

    async def fell_back() -> bool:  # model_verify_interval is 0.2 s here
        return await served_by(http, served.url, "?arm=candidate") == versions.control

    await async_wait_until(fell_back, 20, "the tampered arm to fall back")
    assert versions.candidate in served.box.arm_refused
    assert await served_by(http, served.url, "?arm=control") == versions.control
