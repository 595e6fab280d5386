"""Smoke tests of the benchmark harness pieces (fast: the real runs are ``make bench``)."""

from __future__ import annotations

import asyncio
import shutil

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench import loadgen, wrk
from bench.report import BenchResult, Column, Target, json_line, table, write_results
from bench.servers import baseline_app, stub_apps
from bench.synthetic import SyntheticSpec, describe, generate, unique_sorted
from bench.workload import unique_keys, zipf_ids

TINY = SyntheticSpec(users=3000, items=800, interactions=40_000, seed=3)


def test_synthetic_has_the_requested_shape() -> None:
    data = generate(TINY)
    assert len(data) == TINY.interactions
    assert data.user_ids.min() >= 1 and data.user_ids.max() <= TINY.users
    assert data.item_ids.min() >= 1 and data.item_ids.max() <= TINY.items
    pairs = data.user_ids * (TINY.items + 1) + data.item_ids
    assert len(np.unique(pairs)) == len(pairs), "a (user, item) pair appears twice"
    assert set(np.unique(data.ratings)) <= {x / 2 for x in range(1, 11)}


def test_synthetic_is_skewed_both_ways() -> None:
    stats = describe(generate(TINY))
    # Zipf items: the top 1% of items take far more than 1% of the interactions
    assert stats["top1pct_items_share"] > 0.08
    # heavy-tailed users: the heaviest user is many times the median
    assert stats["user_max"] > 10 * stats["user_median"]


def test_synthetic_is_deterministic() -> None:
    a, b = generate(TINY), generate(TINY)
    for name in ("user_ids", "item_ids", "ratings", "timestamps"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    other = generate(SyntheticSpec(**{**TINY.to_dict(), "seed": 4}))
    assert not np.array_equal(a.item_ids, other.item_ids)


def test_unique_sorted_matches_numpy() -> None:
    values = np.random.default_rng(1).integers(0, 50, 1000)
    assert np.array_equal(unique_sorted(values), np.unique(values))
    assert len(unique_sorted(np.empty(0, np.int64))) == 0


def test_workload_ids() -> None:
    ranked = np.arange(100, 200)
    ids = zipf_ids(ranked, 5000)
    assert set(ids.tolist()) <= set(ranked.tolist())
    assert (ids == 100).mean() > (ids == 150).mean()  # the top rank is the most asked for
    assert np.array_equal(ids, zipf_ids(ranked, 5000))
    keys = unique_keys(ranked, 300, range(1, 4))
    assert len(set(keys)) == 300


def test_table_and_json_line(tmp_path) -> None:
    result = BenchResult(
        "demo",
        "Demo",
        [
            Column("case", "case"),
            Column("rps", "req/s", "{:,.0f}"),
            Column("p99_ms", "p99 ms", "{:.2f}"),
        ],
        rows=[
            {"case": "baseline", "rps": 12345.6, "p99_ms": 1.5},
            {"case": "ours", "rps": 9000.0, "p99_ms": None},
        ],
        targets=[Target("ratio", 0.73, 0.8, ">="), Target("p99", 1.5, 5.0, "<=")],
        notes=["a note"],
    )
    text = table(result)
    lines = text.splitlines()
    assert lines[0].startswith("== Demo")
    assert "12,346" in text and "1.50" in text
    assert len({len(line) for line in lines[1:4]}) == 1  # header, rule and a row align
    assert "MISSED ratio" in text and "MET    p99" in text
    doc = orjson.loads(json_line(result))
    assert doc["bench"] == "demo" and doc["rows"][0]["rps"] == 12345.6
    assert [t["met"] for t in doc["targets"]] == [False, True]
    out = tmp_path / "latest.json"
    write_results([result], out, {"quick": True})
    assert orjson.loads(out.read_bytes())["results"][0]["bench"] == "demo"


async def test_open_loop_runs_the_one_load_generator(tmp_path) -> None:
    """The benchmarks' open-loop load is ``python -m loadtest --paths`` (no second engine)."""
    body = orjson.dumps({"movie_id": 1, "items": []})
    paths = tmp_path / "paths"
    paths.write_text("/v1/similar/1\n/v1/similar/2\n")
    async with TestServer(baseline_app({1: body}, body), host="127.0.0.1") as server:
        row = await asyncio.to_thread(
            loadgen.open_loop,
            f"http://127.0.0.1:{server.port}",
            paths,
            200,
            1.0,
            cpus=(),
            out=tmp_path / "r.json",
        )
    assert row["errors"] == 0
    assert row["rps"] == pytest.approx(200, rel=0.2)
    assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert row["send_lag_p99_ms"] is not None


async def test_stubs_answer_after_their_delay() -> None:
    apps = stub_apps({"recommender": 0.05})
    async with (
        TestServer(apps["recommender"], host="127.0.0.1") as server,
        aiohttp.ClientSession() as session,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with session.get(server.make_url("/v1/similar/7?k=3")) as resp:
            data = await resp.json()
        assert loop.time() - started >= 0.045
    assert data["movie_id"] == 7 and len(data["items"]) == 3 and data["source"] == "model"


async def test_wrk_script_replays_paths(tmp_path) -> None:
    assert shutil.which("wrk"), "wrk is needed: apt-get install -y wrk"
    seen: list[str] = []
    body = b'{"ok":true}'

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    script = wrk.write_script(tmp_path, "t", ["/a?x=1", "/b"], {"X-Test": "1"})
    async with TestServer(app, host="127.0.0.1") as server:
        result = await asyncio.to_thread(
            wrk.run_wrk, f"http://127.0.0.1:{server.port}", script, connections=2, duration=1
        )
    assert result.requests > 10 and result.error_count == 0
    assert set(seen) == {"/a?x=1", "/b"}
    assert result.latency_ms["p50"] <= result.latency_ms["p99"]


async def test_bare_composer_and_tailors_fragments_make_marquees_page() -> None:
    """The two baselines of the composition bench serve the page Marquee serves: the bare
    composer from the stubs' JSON, Tailor from their HTML fragments (same templates)."""
    from bench.servers import FRAGMENT_MARK, bare_app

    apps = stub_apps({})
    servers = {name: TestServer(app, host="127.0.0.1") for name, app in apps.items()}
    for server in servers.values():
        await server.start_server()
    urls = {name: str(s.make_url("")).rstrip("/") for name, s in servers.items()}
    bare = TestServer(bare_app(urls["catalog"], urls["subscription"], urls["recommender"]))
    await bare.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(bare.make_url("/movies/7")) as resp:
                page = await resp.text()
            async with session.get(f"{urls['catalog']}/fragments/frame") as resp:
                frame = await resp.text()
            async with session.get(f"{urls['recommender']}/fragments/similar/7") as resp:
                similar = await resp.text()
    finally:
        await bare.close()
        for server in servers.values():
            await server.close()
    assert resp.status == 200
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "Movie 7 (1995)" in page and "More like this" in page and "Your plan" in page
    assert frame.count(FRAGMENT_MARK) == 2 and "\x00" not in page + frame
    assert "Movie 8 (1995)" in similar and "Movie 8 (1995)" in page


def test_profile_charges_a_sample_to_its_innermost_named_part() -> None:
    from bench.profile import OTHER, parse_raw

    handler = "movie_page (/w/web_server/pages.py:10)"
    raw = "\n".join(
        [
            f"run (/l/asyncio/base_events.py:1);{handler};decode (/w/web_server/clients.py:5) 7",
            f"run (/l/asyncio/base_events.py:1);{handler};render (/l/jinja2/env.py:3) 3",
            "main (/w/x.py:1) 2",
            "garbage line",
        ]
    )
    parts = parse_raw(raw)
    assert parts == {
        "backend calls (client, pool, breaker)": 7,
        "template render": 3,
        OTHER: 2,
    }
