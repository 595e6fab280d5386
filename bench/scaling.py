"""Benchmark 5 — multi-process scaling: 1 vs 2 worker processes per service
(``MARQUEE_WORKERS``; the workers share one port through SO_REUSEPORT, see
services/platform/runner.py).

The servers are not pinned here (two workers need both CPUs); wrk stays on one CPU, so with two
workers the load generator competes with a worker: on a 2-core box the gain is bounded by that,
and the table says what this machine gives, not what a bigger one would.
"""

from __future__ import annotations

import asyncio
import time

from bench import wrk
from bench.context import SECRET, Context, ranked_movies
from bench.procs import free_port, python_server
from bench.report import BenchResult, Column
from bench.serving import _fetch_all
from bench.workload import zipf_ids

CONNECTIONS = 64
WORKERS = (1, 2)

COLUMNS = [
    Column("service", "service"),
    Column("workers", "workers", "{:d}"),
    Column("rps", "req/s", "{:,.0f}"),
    Column("p50_ms", "p50 ms", "{:.2f}"),
    Column("p99_ms", "p99 ms", "{:.2f}"),
    Column("errors", "errors", "{:d}"),
    Column("speedup", "speedup", "{:.2f}x"),
]


def run(ctx: Context) -> BenchResult:
    from services.platform.auth import session_token

    started = time.perf_counter()
    result = BenchResult("scaling", "Worker processes: 1 vs 2 (SO_REUSEPORT)", COLUMNS)
    ranked = ranked_movies(ctx.model_dir)
    ids = zipf_ids(ranked, 20_000)
    similar_paths = [f"/v1/similar/{i}?k=10" for i in ids]
    cookie = {"Cookie": f"marquee_session={session_token(1, SECRET)}"}
    cases = {
        "recommender similar": (
            ["recommender", "serve"],
            "recommender_port",
            wrk.write_script(ctx.workdir, "scale-similar", similar_paths),
            {},
        ),
        "monolith page": (
            ["web_server"],
            "web_port",
            wrk.write_script(ctx.workdir, "scale-page", [f"/movies/{i}" for i in ids], cookie),
            {"mode": "monolith"},
        ),
    }
    duration = ctx.duration(8.0)
    for service, (module, port_key, script, extra) in cases.items():
        base_rps = None
        for workers in WORKERS:
            ctx.flush_redis()
            port = free_port()
            env = ctx.settings_env(
                f"scale-{port}",
                workers=workers,
                redis_url=ctx.redis_url,
                **{port_key: port},
                **extra,
            )
            server = python_server(
                service.split()[0], module, env=env, port=port, logs=ctx.logs, ready_path="/readyz"
            ).start()
            try:
                url = f"http://127.0.0.1:{port}"
                if port_key == "recommender_port":  # every worker warms its own LRU
                    asyncio.run(_fetch_all(url, sorted(set(similar_paths))))
                wrk.run_wrk(url, script, connections=CONNECTIONS, duration=2, cpus=ctx.cpus.load)
                res = wrk.run_wrk(
                    url, script, connections=CONNECTIONS, duration=duration, cpus=ctx.cpus.load
                )
            finally:
                server.stop()
            base_rps = base_rps or res.rps
            result.rows.append(
                {
                    "service": service,
                    "workers": workers,
                    **res.row(),
                    "speedup": res.rps / base_rps if base_rps else None,
                }
            )
    result.notes.append(
        f"servers unpinned (all CPUs), wrk c={CONNECTIONS} pinned to CPU "
        f"{','.join(map(str, ctx.cpus.load)) or '-'}: with 2 workers wrk competes with a worker"
    )
    result.seconds = time.perf_counter() - started
    return result
