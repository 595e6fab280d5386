"""Benchmark 1 — the recommender box's ``GET /v1/similar/{id}`` against the stack's ceiling.

Cases, all on the same Zipf id sequence, server pinned to one CPU and wrk to the other:

- ``baseline``: a bare aiohttp handler returning a precomputed body (the real recommender's bytes
  for that id) — what aiohttp + uvloop can do at all on this machine;
- ``cache hit``: the recommender after a warm-up pass (in-process LRU in front of Redis);
- ``cache miss``: every request a distinct (id, k) key, so each one misses both cache tiers,
  computes from the memory-mapped model and writes Redis.

Then latency at half the measured hit throughput, open loop (``python -m loadtest --paths``:
constant rate, latency from each request's due time), for the recommender and for the baseline
at the same rate.

Each measurement runs ``ROUNDS`` times, the bare server and ours in turn, and the table shows
the medians (the ratio: the median of the rounds' ratios): on a shared machine one pair of
runs drifted by +-10 % from the next.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import aiohttp
import orjson

from bench import wrk
from bench.context import Context, ranked_movies
from bench.loadgen import open_loop
from bench.procs import free_port, python_server
from bench.report import BenchResult, Column, Target
from bench.workload import unique_keys, zipf_ids

ROUNDS = 3
THROUGHPUT_RATIO = 0.80
P99_LIMIT_MS = 5.0
CONNECTIONS = 32
K = 10

COLUMNS = [
    Column("case", "case"),
    Column("load", "load"),
    Column("rps", "req/s", "{:,.0f}"),
    Column("p50_ms", "p50 ms", "{:.2f}"),
    Column("p90_ms", "p90 ms", "{:.2f}"),
    Column("p99_ms", "p99 ms", "{:.2f}"),
    Column("errors", "errors", "{:d}"),
    Column("ratio", "vs baseline", "{:.0%}"),
]


async def _fetch_all(base: str, paths: list[str], concurrency: int = 16) -> dict[str, bytes]:
    """GET each path once (the warm-up pass); path -> body. Raises on any non-200."""
    sem = asyncio.Semaphore(concurrency)
    out: dict[str, bytes] = {}
    async with aiohttp.ClientSession() as session:

        async def one(path: str) -> None:
            async with sem, session.get(base + path) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
                out[path] = body

        await asyncio.gather(*(one(p) for p in paths))
    return out


def _median_run(runs: list[wrk.WrkResult]) -> wrk.WrkResult:
    """The run of median throughput."""
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def _median_p99(runs: list[dict]) -> dict:
    """The open-loop run of median p99."""
    return sorted(runs, key=lambda r: r["p99_ms"] or 0.0)[len(runs) // 2]


def run(ctx: Context) -> BenchResult:
    started = time.perf_counter()
    result = BenchResult("recommender", "Recommender similar/{id} vs bare aiohttp", COLUMNS)
    duration = ctx.duration(5.0)
    ranked = ranked_movies(ctx.model_dir)
    hot_paths = [f"/v1/similar/{int(m)}?k={K}" for m in zipf_ids(ranked, 50_000)]
    distinct = sorted(set(hot_paths))
    miss_keys = unique_keys(ranked, 200_000, range(1, 31))
    miss_paths = [f"/v1/similar/{m}?k={k}" for m, k in miss_keys if k != K]

    hot_script = wrk.write_script(ctx.workdir, "similar-hot", hot_paths)
    miss_script = wrk.write_script(ctx.workdir, "similar-miss", miss_paths)
    port = free_port()
    env = ctx.settings_env("recommender", recommender_port=port, redis_url=ctx.redis_url)
    ctx.flush_redis()
    rec = python_server(
        "recommender",
        ["recommender", "serve"],
        env=env,
        port=port,
        logs=ctx.logs,
        cpus=ctx.cpus.server,
        ready_path="/readyz",
    ).start()
    base_port = free_port()
    try:
        bodies = asyncio.run(_fetch_all(f"http://127.0.0.1:{port}", distinct))  # warm-up
        sample = orjson.loads(bodies[distinct[0]])
        sources = {orjson.loads(b)["source"] for b in bodies.values()}
        bodies_file = ctx.workdir / "baseline-bodies.json"
        by_id = {p.split("/")[3].split("?")[0]: orjson.loads(b) for p, b in bodies.items()}
        for body in by_id.values():
            body["source"] = "cache"  # what a cached answer says; same length as the real one
        bodies_file.write_bytes(orjson.dumps(by_id))
        baseline = python_server(
            "baseline",
            ["bench.servers", "baseline", "--port", str(base_port), "--bodies", str(bodies_file)],
            env=env,
            port=base_port,
            logs=ctx.logs,
            cpus=ctx.cpus.server,
        )
        baseline.start()
        try:
            base_url, rec_url = f"http://127.0.0.1:{base_port}", f"http://127.0.0.1:{port}"

            def closed_loop(url: str, script: Path, seconds: float) -> wrk.WrkResult:
                return wrk.run_wrk(
                    url, script, connections=CONNECTIONS, duration=seconds, cpus=ctx.cpus.load
                )

            # a short warm-up of each server's code paths, then the measured rounds: the bare
            # server and ours take turns, so a drift of this shared machine hits both alike
            closed_loop(base_url, hot_script, 1)
            closed_loop(rec_url, hot_script, 1)
            base_runs, hit_runs = [], []
            for _ in range(ROUNDS):
                base_runs.append(closed_loop(base_url, hot_script, duration))
                hit_runs.append(closed_loop(rec_url, hot_script, duration))
            ratios = [h.rps / b.rps for h, b in zip(hit_runs, base_runs, strict=True)]
            base, hit = _median_run(base_runs), _median_run(hit_runs)
            half = hit.rps / 2
            paths_file = ctx.workdir / "similar-hot.paths"
            hit_halves: list[dict] = []
            base_halves: list[dict] = []
            for n in range(ROUNDS):
                for url, runs in ((rec_url, hit_halves), (base_url, base_halves)):
                    out = ctx.workdir / f"open-{n}-{url.rsplit(':', 1)[1]}.json"
                    runs.append(
                        open_loop(url, paths_file, half, duration, cpus=ctx.cpus.load, out=out)
                    )
            hit_half, base_half = _median_p99(hit_halves), _median_p99(base_halves)
            # last: the miss run pushes the hot set out of the in-process LRU
            miss = closed_loop(rec_url, miss_script, duration)
        finally:
            baseline.stop()
    finally:
        rec.stop()

    load = f"wrk c={CONNECTIONS}"
    rows = [
        {"case": "baseline (bare aiohttp)", "load": load, **base.row(), "ratio": 1.0},
        {
            "case": "similar, cache hit",
            "load": load,
            **hit.row(),
            "ratio": statistics.median(ratios),
        },
        {"case": "similar, cache miss", "load": load, **miss.row(), "ratio": miss.rps / base.rps},
        {
            "case": "similar, cache hit",
            "load": f"open {half:,.0f}/s",
            **{k: hit_half[k] for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "errors")},
        },
        {
            "case": "baseline (bare aiohttp)",
            "load": f"open {half:,.0f}/s",
            **{k: base_half[k] for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "errors")},
        },
    ]
    result.rows = rows
    result.targets = [
        Target(
            "cache-hit throughput / baseline", statistics.median(ratios), THROUGHPUT_RATIO, ">="
        ),
        Target("cache-hit p99 ms at half load (open loop)", hit_half["p99_ms"], P99_LIMIT_MS, "<="),
    ]
    result.notes += [
        f"{ctx.cpus.describe()}; {len(hot_paths):,} Zipf(s=1) ids over {len(ranked):,} movies "
        f"({len(distinct):,} distinct), k={K}",
        f"hit = in-process LRU in front of Redis after one warm-up pass; answers were "
        f"{sorted(sources)} during warm-up, 'cache' after; miss = every request a new (id, k)",
        f"body {len(orjson.dumps(sample))} bytes; model {sample['model_version']}",
        f"{ROUNDS} rounds of {duration:g} s, the bare server and ours in turn; medians shown. "
        f"Cache hit / bare per round: {', '.join(f'{r:.2f}' for r in ratios)}; p99 ms at half "
        f"load per round, ours: {', '.join(str(r['p99_ms']) for r in hit_halves)}, bare: "
        f"{', '.join(str(r['p99_ms']) for r in base_halves)}",
        f"open-loop generator (python -m loadtest): send lag p99 {hit_half['send_lag_p99_ms']} / "
        f"{base_half['send_lag_p99_ms']} ms (hit / baseline runs); "
        + ("it kept up" if hit_half["valid"] and base_half["valid"] else "it FELL BEHIND"),
    ]
    result.extra["ratios"] = {
        "hit": round(statistics.median(ratios), 4),
        "miss": round(miss.rps / base.rps, 4),
    }
    result.seconds = time.perf_counter() - started
    return result
