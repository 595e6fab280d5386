"""The hot path of ``GET /v1/similar/{id}``: the per-version response memo and the raw ``k``
parsing. A memo hit must stay exactly as correct as the slow path: the right version's bytes,
the same errors, every ``k``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp
import orjson
import pytest

from recommender.cache import ResponseMemo
from services.platform.errors import BadRequest
from services.platform.settings import Settings
from tests.recommender.test_service import (
    ADMIN,
    UNKNOWN,
    Running,
    copy_registry,
    post,
    republish,
    start,
)
from tests.support import get_json


async def get_raw(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as resp:
        return resp.status, await resp.read()


def memo_count(metrics, result: str) -> float:
    metrics.flush()  # as a scrape does
    value = metrics.registry.get_sample_value(
        "marquee_cache_requests_total", {"cache": "memo", "result": result}
    )
    return value or 0.0


async def test_memo_answers_repeats_as_cache(rec: Running, http: aiohttp.ClientSession) -> None:
    metrics = rec.box.metrics
    status, first = await get_raw(http, f"{rec.url}/v1/similar/1")
    assert status == 200 and orjson.loads(first)["source"] == "collaborative"
    assert (1, 10) in rec.box.current.memo  # the default k, stored as its cached form
    hits = memo_count(metrics, "hit")
    for _ in range(3):
        status, again = await get_raw(http, f"{rec.url}/v1/similar/1?k=10")
        assert status == 200
        assert again == first.replace(b'"source":"collaborative"', b'"source":"cache"')
    assert memo_count(metrics, "hit") == hits + 3
    assert memo_count(metrics, "miss") >= 1
    # the request itself is still counted by the platform middleware
    sample = metrics.registry.get_sample_value(
        "marquee_http_requests_total",
        {"route": "/v1/similar/{movie_id}", "method": "GET", "status": "200"},
    )
    assert sample == 4


async def test_memo_never_serves_a_previous_version(
    settings: Settings, model_dir: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A swap replaces the memo with the model: the same (id, k) is recomputed by the new
    version and labelled with it, never answered with the old version's bytes."""
    models = copy_registry(model_dir, tmp_path)
    rec = await start(dataclasses.replace(settings, model_dir=models))
    try:
        v1 = rec.box.version
        for _ in range(2):
            status, body = await get_json(http, f"{rec.url}/v1/similar/1?k=4")
            assert (status, body["model_version"]) == (200, v1)
        old_memo = rec.box.current.memo
        assert (1, 4) in old_memo
        v2 = republish(models)
        status, reloaded = await post(http, f"{rec.url}/v1/model/reload", headers=ADMIN)
        assert (status, reloaded["version"]) == (200, v2) and v2 != v1
        assert rec.box.current.memo is not old_memo and len(rec.box.current.memo) == 0
        status, body = await get_json(http, f"{rec.url}/v1/similar/1?k=4")
        assert (status, body["model_version"], body["source"]) == (200, v2, "collaborative")
        status, body = await get_json(http, f"{rec.url}/v1/similar/1?k=4")
        assert (status, body["model_version"], body["source"]) == (200, v2, "cache")
    finally:
        await rec.server.close()


async def test_fast_path_keeps_errors_and_every_k(
    rec: Running, http: aiohttp.ClientSession
) -> None:
    for _ in range(2):  # an unknown movie is never memoised: still a 404 the second time
        status, body = await get_json(http, f"{rec.url}/v1/similar/{UNKNOWN}")
        assert (status, body["error"]["code"]) == (404, "unknown_movie")
    for query in ("k=0", "k=101", "k=abc", "k=-1", "k=1.5", "k=%31%30%30%30"):
        status, body = await get_json(http, f"{rec.url}/v1/similar/1?{query}")
        assert (status, body["error"]["code"]) == (400, "invalid_param"), query
    status, body = await get_json(http, f"{rec.url}/v1/similar/abc")
    assert (status, body["error"]["code"]) == (400, "invalid_id")
    cases = {
        "": 10,
        "?k=": 10,
        "?k=3": 3,
        "?k=03": 3,
        "?k=20": 20,
        "?x=1&k=7": 7,
        "?k=7&x=1": 7,
        "?k=%37": 7,
    }
    for query, k in cases.items():
        for _ in range(2):  # computed, then from the memo
            status, body = await get_json(http, f"{rec.url}/v1/similar/1{query}")
            assert status == 200 and len(body["items"]) == k, query
    status, body = await get_json(http, f"{rec.url}/v1/similar/1?k=100")  # the maximum
    assert status == 200 and 0 < len(body["items"]) <= 100
    assert all((1, k) in rec.box.current.memo for k in (10, 3, 20, 7, 100))


async def test_box_fast_path_still_validates_types(rec: Running) -> None:
    """In-process callers (the monolith) cannot slip past validation via the memo: ``True``
    hashes like ``1`` but is not a movie id."""
    await rec.box.similar_json(1, 10)
    assert (1, 10) in rec.box.current.memo
    with pytest.raises(BadRequest):
        await rec.box.similar_json(True, 10)
    with pytest.raises(BadRequest):
        await rec.box.similar_json(1, 10.0)


def test_response_memo_is_bounded_by_bytes() -> None:
    memo = ResponseMemo(max_bytes=10)
    memo.put((1, 1), b"1234")
    memo.put((2, 1), b"1234")
    assert memo.size == 8 and memo.get((1, 1)) == b"1234"
    memo.put((3, 1), b"123")  # over budget: the oldest entry goes
    assert memo.get((1, 1)) is None and memo.get((2, 1)) == b"1234"
    assert memo.get((3, 1)) == b"123" and memo.size == 7
    memo.put((4, 1), b"x" * 11)  # larger than the whole budget: never stored
    assert (4, 1) not in memo and len(memo) == 2
    memo.put((2, 1), b"12")  # an existing key keeps its first value (answers never change)
    assert memo.get((2, 1)) == b"1234"
    memo.clear()
    assert len(memo) == 0 and memo.size == 0


def test_an_alias_counts_its_own_length_too() -> None:
    memo = ResponseMemo(max_bytes=20)
    memo.put("/v1/similar/1", b"1234")  # 13 + 4 bytes
    assert memo.size == 17 and memo.get_alias("/v1/similar/1") == b"1234"
    memo.put((1, 10), b"1234")  # 21 > 20: the alias, oldest, goes
    assert memo.get_alias("/v1/similar/1") is None and memo.size == 4


async def test_a_repeated_request_target_is_answered_by_its_alias(
    rec: Running, http: aiohttp.ClientSession
) -> None:
    metrics = rec.box.metrics
    _, first = await get_raw(http, f"{rec.url}/v1/similar/1?k=5")
    assert "/v1/similar/1?k=5" in rec.box.current.memo
    _, other_form = await get_raw(http, f"{rec.url}/v1/similar/1?k=05")  # same (id, k)
    assert "/v1/similar/1?k=05" in rec.box.current.memo
    hits, misses = memo_count(metrics, "hit"), memo_count(metrics, "miss")
    _, again = await get_raw(http, f"{rec.url}/v1/similar/1?k=05")
    assert again == other_form == first.replace(b'"collaborative"', b'"cache"')
    assert (memo_count(metrics, "hit"), memo_count(metrics, "miss")) == (hits + 1, misses)


async def test_an_arm_target_is_never_remembered_by_target(
    rec: Running, http: aiohttp.ClientSession
) -> None:
    """Which version answers an arm changes with the experiment: the published version's memo
    must not keep an answer for it."""
    for _ in range(2):
        status, body = await get_json(http, f"{rec.url}/v1/similar/1?arm=control")
        assert (status, body["model_version"]) == (200, rec.box.version)
    assert "/v1/similar/1?arm=control" not in rec.box.current.memo
    status, body = await get_json(http, f"{rec.url}/v1/similar/1?farm=1")  # not an arm
    assert status == 200
    status, body = await get_json(http, f"{rec.url}/v1/similar/1?arm=both")
    assert (status, body["error"]["code"]) == (400, "invalid_arm")
