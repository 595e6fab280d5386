"""Benchmark 3 — the same movie page served by the monolith and by the microservices.

Monolith: one web server process hosting catalog, subscription and recommender in-process.
Microservices: catalog, subscription, recommender and web server as four processes talking HTTP.
Both use the same Redis, model, catalog store and request sequence (Zipf ids, a logged-in
viewer, HTML page), and all their processes share the same server CPU(s), so the comparison is
at an equal hardware budget.
"""

from __future__ import annotations

import time

from bench import wrk
from bench.context import SECRET, Context, ranked_movies
from bench.procs import Server, free_port, python_server
from bench.report import BenchResult, Column
from bench.workload import zipf_ids

CONNECTIONS = 32

COLUMNS = [
    Column("mode", "mode"),
    Column("page", "page"),
    Column("processes", "procs", "{:d}"),
    Column("rps", "pages/s", "{:,.0f}"),
    Column("p50_ms", "p50 ms", "{:.1f}"),
    Column("p90_ms", "p90 ms", "{:.1f}"),
    Column("p99_ms", "p99 ms", "{:.1f}"),
    Column("errors", "errors", "{:d}"),
    Column("ratio", "vs monolith", "{:.0%}"),
]


def _monolith(ctx: Context, port: int) -> list[Server]:
    env = ctx.settings_env("monolith", mode="monolith", web_port=port, redis_url=ctx.redis_url)
    return [
        python_server(
            "monolith",
            ["web_server"],
            env=env,
            port=port,
            logs=ctx.logs,
            cpus=ctx.cpus.server,
            ready_path="/readyz",
        ).start()
    ]


def _microservices(ctx: Context, port: int) -> list[Server]:
    ports = {n: free_port() for n in ("catalog", "subscription", "recommender")}
    urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    common = {
        "redis_url": ctx.redis_url,
        "catalog_port": ports["catalog"],
        "subscription_port": ports["subscription"],
        "recommender_port": ports["recommender"],
        "catalog_url": urls["catalog"],
        "subscription_url": urls["subscription"],
        "recommender_urls": urls["recommender"],
    }
    env = ctx.settings_env("micro", mode="microservices", web_port=port, **common)
    started: list[Server] = []
    try:
        for name, module in (
            ("catalog", ["services.catalog"]),
            ("subscription", ["services.subscription"]),
            ("recommender", ["recommender", "serve"]),
        ):
            started.append(
                python_server(
                    name,
                    module,
                    env=env,
                    port=ports[name],
                    logs=ctx.logs,
                    cpus=ctx.cpus.server,
                    ready_path="/readyz",
                ).start()
            )
        started.append(
            python_server(
                "web",
                ["web_server"],
                env=env,
                port=port,
                logs=ctx.logs,
                cpus=ctx.cpus.server,
                ready_path="/readyz",
            ).start()
        )
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return started


def run(ctx: Context) -> BenchResult:
    from services.platform.auth import session_token

    started = time.perf_counter()
    result = BenchResult("deployment", "Monolith vs microservices, same page", COLUMNS)
    ids = zipf_ids(ranked_movies(ctx.model_dir), 20_000)
    cookie = {"Cookie": f"marquee_session={session_token(1, SECRET)}"}
    scripts = {
        "html": wrk.write_script(ctx.workdir, "deploy-html", [f"/movies/{i}" for i in ids], cookie),
        "api": wrk.write_script(
            ctx.workdir, "deploy-api", [f"/api/pages/movies/{i}" for i in ids], cookie
        ),
    }
    duration = ctx.duration(8.0)
    for mode, start in (("monolith", _monolith), ("microservices", _microservices)):
        ctx.flush_redis()
        port = free_port()
        servers = start(ctx, port)
        try:
            url = f"http://127.0.0.1:{port}"
            for page, script in scripts.items():
                wrk.run_wrk(
                    url, script, connections=CONNECTIONS, duration=2, cpus=ctx.cpus.load
                )  # warm-up: caches, pools
                res = wrk.run_wrk(
                    url, script, connections=CONNECTIONS, duration=duration, cpus=ctx.cpus.load
                )
                result.rows.append(
                    {"mode": mode, "page": page, "processes": len(servers), **res.row()}
                )
        finally:
            for server in reversed(servers):
                server.stop()
    mono = {r["page"]: r["rps"] for r in result.rows if r["mode"] == "monolith"}
    for row in result.rows:
        row["ratio"] = row["rps"] / mono[row["page"]] if mono.get(row["page"]) else None
    result.notes += [
        f"logged-in viewer, Zipf ids, wrk c={CONNECTIONS}, warm caches (Redis + in-process); "
        f"{ctx.cpus.describe()}; each mode's processes share the server CPU(s)",
    ]
    result.seconds = time.perf_counter() - started
    return result
