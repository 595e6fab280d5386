"""The worker, as a real process on the real Redis: correct results, at-least-once delivery that
survives SIGKILL, graceful SIGTERM, one model version per job, and expiry."""

from __future__ import annotations

import csv
import random
import shutil
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from recommender import app as recommender_app
from recommender.batch import BatchJobs
from recommender.registry import ModelRegistry
from services.platform.errors import NotFound
from tests.batch.conftest import job_ttls, wait_status
from tests.conftest import replace
from tests.support import async_wait_until, wait_until

DATA = Path(__file__).resolve().parents[2] / "data" / "ml-latest-small"


def movies_csv(ids: list[int]) -> bytes:
    return ("movie_id\n" + "\n".join(map(str, ids)) + "\n").encode()


def users_csv(ids: list[int]) -> bytes:
    return ("user_id\r\n" + "\r\n".join(map(str, ids)) + "\r\n").encode()


async def online_similar(http: aiohttp.ClientSession, base: str, ids: list[int], k: int):
    """The online API's answers, 100 ids per call; returns (rows, model versions seen)."""
    answers: dict[int, dict] = {}
    versions = set()
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), 100):
        part = ",".join(map(str, unique[i : i + 100]))
        async with http.get(f"{base}/v1/similar", params={"ids": part, "k": str(k)}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        versions.add(body["model_version"])
        assert body["missing"] == []
        answers.update({r["movie_id"]: r for r in body["results"]})
    rows = [
        {
            "row": n,
            "movie_id": movie,
            "rank": rank,
            "similar_movie_id": item["movie_id"],
            "score": item["score"],
        }
        for n, movie in enumerate(ids, 1)
        for rank, item in enumerate(answers[movie]["items"], 1)
    ]
    return rows, versions


@pytest.fixture
async def online(batch_settings):
    """The recommender service (the online API) on a real socket."""
    server = TestServer(recommender_app.create_app(batch_settings), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_a_1000_row_job_matches_the_online_api(
    jobs: BatchJobs, start_worker, loaded_model, online: str, http: aiohttp.ClientSession
) -> None:
    model, manifest = loaded_model
    known = [int(m) for m in model.item_ids]
    ids = known[:990] + known[:5] + known[-5:]  # some ids twice: each row answered
    assert len(ids) == 1000
    worker = start_worker()
    job = await jobs.submit(movies_csv(ids), "movies.csv", owner=1, k=10)
    done = await wait_status(jobs, job["job_id"], proc=worker)
    assert done["model_version"] == manifest.version
    assert done["processed_rows"] == done["total_rows"] == 1000 and done["progress"] == 1.0
    assert done["warning_count"] == 0 and done["attempts"] == 1

    rows = await jobs.results(job["job_id"])
    expected, versions = await online_similar(http, online, ids, 10)
    assert versions == {manifest.version}
    assert len(rows) == done["result_rows"] == sum(len(model.similar(m, 10)) for m in ids)
    assert rows == expected
    assert await jobs.queue_depth() == 0  # acked and deleted


async def test_a_users_job_matches_the_online_api_and_warns_of_unknown_ids(
    jobs: BatchJobs, start_worker, loaded_model, online: str, http: aiohttp.ClientSession
) -> None:
    model, manifest = loaded_model
    users = [int(u) for u in model.user_ids[:120]]
    ids = [*users[:60], 999_999, *users[60:], 888_888]
    worker = start_worker()
    job = await jobs.submit(users_csv(ids), "users.csv", owner=2, k=5)
    done = await wait_status(jobs, job["job_id"], proc=worker)
    assert done["warning_count"] == 2
    assert [(w["line"], w["row"], w["id"]) for w in done["warnings"]] == [
        (62, 61, 999_999),
        (123, 122, 888_888),
    ]
    assert "line 62: unknown user_id 999999" in done["warnings"][0]["message"]

    rows = await jobs.results(job["job_id"])
    expected = []
    for n, user in enumerate(ids, 1):
        if user in (999_999, 888_888):
            continue
        url = f"{online}/v1/users/{user}/recommendations"
        async with http.get(url, params={"k": "5"}) as resp:
            body = await resp.json()
        assert body["model_version"] == done["model_version"] == manifest.version
        expected += [
            {
                "row": n,
                "user_id": user,
                "rank": rank,
                "movie_id": item["movie_id"],
                "score": item["score"],
            }
            for rank, item in enumerate(body["items"], 1)
        ]
    assert rows == expected and len(rows) == 120 * 5


async def test_a_histories_job_answers_like_the_api(
    jobs: BatchJobs, start_worker, loaded_model, online: str, http: aiohttp.ClientSession
) -> None:
    """A MovieLens ratings file is a valid upload: each user's rows (shuffled, interleaved)
    are their history, answered like GET /v1/users/{id}/recommendations; an unknown movie is
    ignored with a warning naming its line, like POST /v1/recommendations ignores it."""
    model, manifest = loaded_model
    users = [3, 15, 42]
    data = DATA / "ratings.csv"
    with open(data, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["userId"]) in users]
    random.Random(5).shuffle(rows)
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{r['userId']},{r['movieId']},{r['rating']},{r['timestamp']}" for r in rows]
    lines.append("42,999999,4.0,1")  # unknown movie: ignored, warned about
    worker = start_worker()
    job = await jobs.submit(("\n".join(lines) + "\n").encode(), "ratings.csv", owner=3, k=5)
    assert job["kind"] == "histories" and job["total_rows"] == 3  # one unit per user
    done = await wait_status(jobs, job["job_id"], proc=worker)
    assert done["warning_count"] == 1 and done["warnings"][0]["line"] == len(lines)
    assert "unknown movie_id 999999" in done["warnings"][0]["message"]
    assert done["warnings"][0]["message"].endswith("ignored")

    results = await jobs.results(job["job_id"])
    first_row = {}
    for n, r in enumerate(rows, 1):
        first_row.setdefault(int(r["userId"]), n)
    expected = []
    for user in sorted(users, key=first_row.get):
        async with http.get(f"{online}/v1/users/{user}/recommendations?k=5") as resp:
            body = await resp.json()
        assert body["model_version"] == done["model_version"] == manifest.version
        expected += [
            {
                "row": first_row[user],
                "user_id": user,
                "rank": rank,
                "movie_id": item["movie_id"],
                "score": item["score"],
            }
            for rank, item in enumerate(body["items"], 1)
        ]
    assert results == expected


def assert_every_row_once(rows: list[dict], ids: list[int], k: int, model) -> None:
    """Each input row's answers appear exactly once, ranks 1..n, nothing missing or extra."""
    pairs = Counter((r["row"], r["rank"]) for r in rows)
    assert set(pairs.values()) == {1}
    expected = {
        (row, rank)
        for row, movie in enumerate(ids, 1)
        for rank in range(1, len(model.similar(movie, k)) + 1)
    }
    assert set(pairs) == expected
    assert all(r["movie_id"] == ids[r["row"] - 1] for r in rows)


async def test_a_job_survives_its_worker_being_killed(
    batch_keys, redis_client, batch_settings, start_worker, loaded_model
) -> None:
    model, _ = loaded_model
    jobs = BatchJobs(redis_client, replace(batch_settings, batch_chunk_size=20))
    ids = [int(m) for m in model.item_ids[1000:2000]]
    first = start_worker(batch_chunk_pause=0.04)
    job = await jobs.submit(movies_csv(ids), "big.csv", owner=1, k=4)
    job_id = job["job_id"]

    async def mid_way() -> bool:
        status = await jobs.status(job_id)
        return 0 < status["processed_rows"] < 600

    await async_wait_until(mid_way, 20, "the job to be part done")
    first.signal(signal.SIGKILL)
    first.proc.wait(5)
    assert first.proc.returncode == -signal.SIGKILL
    at_kill = await jobs.status(job_id)
    assert at_kill["status"] == "running" and at_kill["processed_rows"] < 1000

    second = start_worker()
    done = await wait_status(jobs, job_id, proc=second)
    rows = await jobs.results(job_id)
    assert done["attempts"] == 2
    assert done["processed_rows"] == 1000 and done["result_rows"] == len(rows)
    assert await redis_client.hlen(batch_keys.results(job_id)) == 50  # one field per chunk
    assert_every_row_once(rows, ids, 4, model)
    expected = [model.similar(m, 4) for m in ids]
    assert [(r["similar_movie_id"], r["score"]) for r in rows] == [
        (int(m), round(float(s), 6)) for pairs in expected for m, s in pairs
    ]
    assert await redis_client.xlen(batch_keys.stream) == 0
    pending = await redis_client.xpending(batch_keys.stream, "marquee-batch-workers")
    assert pending["pending"] == 0


async def test_sigterm_hands_the_job_over_at_once(
    redis_client, batch_settings, start_worker, loaded_model
) -> None:
    model, _ = loaded_model
    slow = replace(batch_settings, batch_chunk_size=10, batch_claim_idle=30.0)
    jobs = BatchJobs(redis_client, slow)
    ids = [int(m) for m in model.item_ids[:400]]
    first = start_worker(batch_chunk_pause=0.05, batch_claim_idle=30)
    job = await jobs.submit(movies_csv(ids), "slow.csv", owner=1, k=3)

    async def started() -> bool:
        return (await jobs.status(job["job_id"]))["processed_rows"] > 0

    await async_wait_until(started, 20, "the job to start")
    first.signal(signal.SIGTERM)
    wait_until(lambda: first.proc.poll() is not None, 10, "the worker to exit")
    assert first.proc.returncode == 0
    assert (await jobs.status(job["job_id"]))["status"] == "queued"
    # a long claim idle time: the second worker only gets the job because it was handed back
    second = start_worker(batch_claim_idle=30)
    done = await wait_status(jobs, job["job_id"], timeout=15, proc=second)
    assert done["attempts"] == 2
    assert_every_row_once(await jobs.results(job["job_id"]), ids, 3, model)


async def test_a_resumed_job_keeps_its_model_version(
    batch_keys,
    redis_client,
    batch_settings,
    start_worker,
    loaded_model,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    model, old = loaded_model
    registry_dir = tmp_path / "models"
    shutil.copytree(model_dir, registry_dir)
    new = ModelRegistry(registry_dir).register(
        model, data_hash="another", metrics={}, trained_seconds=0.0
    )
    assert new.version != old.version
    settings = replace(batch_settings, model_dir=registry_dir)
    jobs = BatchJobs(redis_client, settings)
    ids = [int(m) for m in model.item_ids[:50]]
    resumed = await jobs.submit(movies_csv(ids), "resumed.csv", owner=1)
    fresh = await jobs.submit(movies_csv(ids), "fresh.csv", owner=1)
    # as if a worker had started `resumed` with the old version and died
    await redis_client.hset(
        batch_keys.job(resumed["job_id"]),
        mapping={"model_version": old.version, "status": "running"},
    )
    worker = start_worker(model_dir=registry_dir)
    assert (await wait_status(jobs, resumed["job_id"], proc=worker))["model_version"] == old.version
    assert (await wait_status(jobs, fresh["job_id"], proc=worker))["model_version"] == new.version


async def test_jobs_and_results_expire(
    batch_keys, redis_client, batch_settings, start_worker
) -> None:
    jobs = BatchJobs(redis_client, replace(batch_settings, batch_ttl=30))
    worker = start_worker(batch_ttl=2)
    job = await jobs.submit(movies_csv([1, 2, 3]), "tiny.csv", owner=4)
    assert 0 < (await jobs.status(job["job_id"]))["expires_in"] <= 30
    await wait_status(jobs, job["job_id"], proc=worker)
    ttls = await job_ttls(redis_client, batch_keys, job["job_id"])
    assert all(0 < ttl <= 2 for ttl in ttls.values()), ttls  # the worker's ttl from completion

    async def gone() -> bool:
        try:
            await jobs.status(job["job_id"])
        except NotFound:
            return True
        return False

    await async_wait_until(gone, 10, "the job to expire")
    assert await jobs.recent(4) == []
    assert await redis_client.keys(batch_keys.job("*")) == []
