"""Benchmark 2 — the movie page's cost: Marquee's composer against node-tailor and a bare aiohttp
composer, on the same stubbed backends, in one run.

The three backends are stubs (``bench.servers stubs``): catalog 20 ms, subscription 30 ms,
recommender 50 ms, the catalog's titles batch 20 ms, so every composer's critical path is
``max(20, 30, 50 + 20)`` = 70 ms. The viewer is logged in, so all three are called. Composers:

- ``marquee``: the web server in microservices mode, the shipped defaults (access log, metrics,
  load shedding), the HTML page (``/movies/{id}``, streamed) and the JSON page;
- ``bare aiohttp``: ``asyncio.gather`` over aiohttp's client, then one Jinja2 render of the same
  templates (``bench.servers bare``): what the simplest aiohttp service would do;
- ``node-tailor``: Zalando's Tailor 3.9.2 (from npm, installed into ``bench/tailor``) composing
  the same page from three HTML fragments the stubs serve with the same delays (the similar row
  in one call of 70 ms: Tailor fetches fragments, it does not chain calls).

Each composer runs alone on the server CPU, the stubs and wrk on the other. Per concurrency
(wrk closed loop, c = 1, 64, 256): pages/s, the composer's CPU per page (utime + stime of its
process from ``/proc``, divided by the pages served), p50/p99, errors (anything but a 2xx, and
wrk's connect/read/timeouts) and shed pages (503 with Retry-After) apart, bytes per page; and
the time to the first byte of the page at c=1 and, beside a c=63 load, at c=64.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httptools

from bench import wrk
from bench.context import SECRET, Context, ranked_movies
from bench.procs import Server, cpu_seconds, free_port, pinned, python_server
from bench.report import BenchResult, Column, Target
from bench.servers import FRAGMENT_MARK
from bench.workload import zipf_ids

DELAYS_MS = {"catalog": 20.0, "catalog_batch": 20.0, "subscription": 30.0, "recommender": 50.0}
CRITICAL_MS = max(
    DELAYS_MS["catalog"],
    DELAYS_MS["subscription"],
    DELAYS_MS["recommender"] + DELAYS_MS["catalog_batch"],
)
CONCURRENCY = (1, 64, 256)
TAILOR_DIR = Path(__file__).resolve().parent / "tailor"
TTFB_SAMPLES = 200
# targets (issue 13), as ratios to node-tailor from the same run
HTML_CPU_RATIO = 1.0
JSON_CPU_RATIO = 0.8
TTFB_OVER_CATALOG_MS = {1: 2.0, 64: 5.0}
SHED_SHARE = 0.01

COLUMNS = [
    Column("composer", "composer"),
    Column("page", "page"),
    Column("c", "conc", "{:d}"),
    Column("rps", "pages/s", "{:,.0f}"),
    Column("cpu_ms", "cpu ms/page", "{:.3f}"),
    Column("p50_ms", "p50 ms", "{:.1f}"),
    Column("p99_ms", "p99 ms", "{:.1f}"),
    Column("ttfb_ms", "ttfb p50", "{:.1f}"),
    Column("errors", "errors", "{:d}"),
    Column("shed", "shed", "{:d}"),
    Column("kb", "KB/page", "{:.1f}"),
]


@dataclass(frozen=True)
class Composer:
    label: str
    page: str  # html | json
    path: str  # with {id}
    server: Server


def _tailor_installed() -> bool:
    return (TAILOR_DIR / "node_modules" / "node-tailor").is_dir()


def install_tailor() -> str | None:
    """node-tailor from npm into bench/tailor (once); the reason when it cannot be had."""
    if _tailor_installed():
        return None
    if shutil.which("npm") is None or shutil.which("node") is None:
        return "node and npm are needed for the node-tailor baseline"
    proc = subprocess.run(
        ["npm", "ci" if (TAILOR_DIR / "package-lock.json").exists() else "install"]
        + ["--no-audit", "--no-fund", "--loglevel=error"],
        cwd=TAILOR_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 or not _tailor_installed():
        return f"npm install node-tailor failed: {proc.stderr.strip()[-300:]}"
    return None


def _stubs(ctx: Context) -> tuple[Server, dict[str, str]]:
    ports = {name: free_port() for name in ("catalog", "subscription", "recommender")}
    args = ["bench.servers", "stubs"]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    for name, ms in DELAYS_MS.items():
        args += [f"--{name.replace('_', '-')}-ms", f"{ms:g}"]
    server = python_server(
        "stubs",
        args,
        env=ctx.settings_env("stubs"),
        port=ports["recommender"],
        logs=ctx.logs,
        cpus=ctx.cpus.load,
    )
    return server.start(), {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}


def _tailor_template(ctx: Context, urls: dict[str, str]) -> Path:
    """Tailor's template: Marquee's page frame around three fragment tags."""
    with urllib.request.urlopen(f"{urls['catalog']}/fragments/frame", timeout=10) as resp:
        before, between, after = resp.read().decode().split(FRAGMENT_MARK)
    tags = '<fragment id="movie" primary></fragment><fragment id="plan"></fragment>'
    path = ctx.workdir / "tailor-movie.html"
    path.write_text(f'{before}{tags}{between}<fragment id="similar"></fragment>{after}')
    return path


def _composers(ctx: Context, urls: dict[str, str], tailor_template: Path | None) -> list[Composer]:
    web_port, bare_port, tailor_port = free_port(), free_port(), free_port()
    env = ctx.settings_env(
        "web-composition",
        mode="microservices",
        web_port=web_port,
        catalog_url=urls["catalog"],
        subscription_url=urls["subscription"],
        recommender_urls=urls["recommender"],
        redis_url="",
    )
    marquee = python_server(
        "web", ["web_server"], env=env, port=web_port, logs=ctx.logs, cpus=ctx.cpus.server
    )
    marquee.ready_url = f"http://127.0.0.1:{web_port}/readyz"
    bare = python_server(
        "bare",
        [
            "bench.servers",
            "bare",
            "--port",
            str(bare_port),
            "--catalog-url",
            urls["catalog"],
            "--subscription-url",
            urls["subscription"],
            "--recommender-url",
            urls["recommender"],
        ],
        env=env,
        port=bare_port,
        logs=ctx.logs,
        cpus=ctx.cpus.server,
    )
    composers = [
        Composer("marquee", "html", "/movies/{id}", marquee),
        Composer("marquee", "json", "/api/pages/movies/{id}", marquee),
        Composer("bare aiohttp", "html", "/movies/{id}", bare),
    ]
    if tailor_template is not None:
        node = Server(
            name="tailor",
            args=pinned(
                [
                    "node",
                    str(TAILOR_DIR / "server.js"),
                    str(tailor_port),
                    str(tailor_template),
                    urls["catalog"],
                    urls["subscription"],
                    urls["recommender"],
                ],
                ctx.cpus.server,
            ),
            env={**os.environ, "NODE_ENV": "production"},
            log_path=ctx.logs / f"tailor-{tailor_port}.log",
            port=tailor_port,
            ready_url=f"http://127.0.0.1:{tailor_port}/healthz",
        )
        composers.append(Composer("node-tailor", "html", "/movies/{id}", node))
    return composers


# ---- time to first byte -----------------------------------------------------------------------
class _FirstByte:
    """One keep-alive connection timing each answer's first byte (httptools parses the rest)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.first: float | None = None
        self.done = asyncio.Event()

    def on_message_complete(self) -> None:
        self.done.set()


async def ttfb_ms(port: int, paths: list[str], headers: dict[str, str]) -> float:
    """The median time (ms) from sending a request to the first byte of its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    times = []
    try:
        for path in paths:
            probe = _FirstByte()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
            sent = time.perf_counter()
            while not probe.done.is_set():
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed mid-answer")
                if probe.first is None:
                    probe.first = time.perf_counter()
                probe.parser.feed_data(data)
            assert probe.first is not None  # the loop ran at least once
            times.append((probe.first - sent) * 1000)
    finally:
        writer.close()
    return round(statistics.median(times), 2)


# ---- measuring --------------------------------------------------------------------------------
def _measure(
    ctx: Context, composer: Composer, script: Path, paths: list[str], cookie: dict[str, str]
) -> list[dict]:
    port = composer.server.port
    assert port is not None
    url = f"http://127.0.0.1:{port}"
    wrk.run_wrk(url, script, connections=64, duration=ctx.duration(4.0), cpus=ctx.cpus.load)
    rows = []
    for c in CONCURRENCY:
        ttfb = None
        if c == 1:
            ttfb = asyncio.run(ttfb_ms(port, paths[:TTFB_SAMPLES], cookie))
        before = cpu_seconds(composer.server.pid)
        if c == 64:  # 63 wrk connections and the probe's one
            with subprocess.Popen(
                wrk.command(
                    url, script, connections=63, duration=ctx.duration(10.0), cpus=ctx.cpus.load
                ),
                stdout=subprocess.PIPE,
                text=True,
            ) as load:
                time.sleep(1.0)  # the load is on before the probe starts
                ttfb = asyncio.run(ttfb_ms(port, paths[:TTFB_SAMPLES], cookie))
                out, _ = load.communicate()
            res = wrk.parse(out)
        else:
            res = wrk.run_wrk(
                url, script, connections=c, duration=ctx.duration(10.0), cpus=ctx.cpus.load
            )
        spent = cpu_seconds(composer.server.pid) - before
        pages = res.requests + (TTFB_SAMPLES if c == 64 else 0)
        rows.append(
            {
                "composer": composer.label,
                "page": composer.page,
                "c": c,
                "rps": round(res.rps, 1),
                "cpu_ms": round(spent / max(pages, 1) * 1000, 4),
                "p50_ms": res.latency_ms["p50"],
                "p99_ms": res.latency_ms["p99"],
                "ttfb_ms": ttfb,
                "errors": res.failures,
                "shed": res.shed,
                "kb": round(res.bytes / max(res.requests, 1) / 1024, 2),
                "requests": res.requests,
            }
        )
    return rows


def run(ctx: Context) -> BenchResult:
    from services.platform.auth import session_token

    started = time.perf_counter()
    result = BenchResult(
        "composition", "The movie page: Marquee vs node-tailor and bare aiohttp", COLUMNS
    )
    ids = zipf_ids(ranked_movies(ctx.model_dir), 20_000)
    cookie = {"Cookie": f"marquee_session={session_token(1, SECRET)}"}
    why_no_tailor = install_tailor()
    stubs, urls = _stubs(ctx)
    composers: list[Composer] = []
    try:
        # the floor of the first byte: the catalog's own answer, probed the same way
        catalog_port = int(urls["catalog"].rsplit(":", 1)[1])
        catalog_paths = [f"/v1/movies/{i}" for i in ids[:TTFB_SAMPLES]]
        result.extra["catalog_ttfb_ms"] = asyncio.run(ttfb_ms(catalog_port, catalog_paths, {}))
        template = _tailor_template(ctx, urls) if why_no_tailor is None else None
        composers = _composers(ctx, urls, template)
        for composer in composers:
            paths = [composer.path.format(id=i) for i in ids]
            name = f"{composer.label}-{composer.page}".replace(" ", "-")
            script = wrk.write_script(ctx.workdir, name, paths, cookie)
            if composer.server.proc is None:
                composer.server.start()
            result.rows += _measure(ctx, composer, script, paths, cookie)
            if not any(
                c.server is composer.server for c in composers[composers.index(composer) + 1 :]
            ):
                composer.server.stop()  # the next composers run alone on the server CPU
    finally:
        for composer in composers:
            composer.server.stop()
        stubs.stop()
    _targets(result, result.extra["catalog_ttfb_ms"])
    result.notes += [
        "stub delays ms: "
        + ", ".join(f"{k} {v:g}" for k, v in DELAYS_MS.items())
        + f"; critical path {CRITICAL_MS:g} ms; Tailor's similar fragment takes the recommender "
        "and the titles lookup together",
        "logged-in viewer; Zipf movie ids; each composer warmed 4 s at c=64 first; wrk closed "
        "loop; cpu ms/page = (utime + stime of the composer's process) / pages",
        "errors = wrk connect/read/write/timeouts + non-2xx answers other than 503; shed = 503s",
        "ttfb p50 = median time to the page's first byte over 200 requests on one connection "
        "(c=64: beside 63 wrk connections); the catalog stub's own, probed alike: "
        f"{result.extra['catalog_ttfb_ms']:.2f} ms",
        ctx.cpus.describe() + " (the stubs share the load generator's CPU)",
    ]
    if why_no_tailor:
        result.notes.append(f"node-tailor not measured: {why_no_tailor}")
    result.seconds = time.perf_counter() - started
    return result


def _row(result: BenchResult, composer: str, page: str, c: int) -> dict | None:
    return next(
        (r for r in result.rows if (r["composer"], r["page"], r["c"]) == (composer, page, c)),
        None,
    )


def _targets(result: BenchResult, catalog_ttfb: float) -> None:
    ratios: dict[str, float] = {}
    for c in CONCURRENCY:
        tailor = _row(result, "node-tailor", "html", c)
        html = _row(result, "marquee", "html", c)
        api = _row(result, "marquee", "json", c)
        if tailor and html and api and tailor["cpu_ms"] > 0:
            ratios[f"html_cpu_c{c}"] = round(html["cpu_ms"] / tailor["cpu_ms"], 3)
            ratios[f"json_cpu_c{c}"] = round(api["cpu_ms"] / tailor["cpu_ms"], 3)
            ratios[f"html_rps_c{c}"] = round(html["rps"] / max(tailor["rps"], 1e-9), 3)
    result.extra["ratios_to_tailor"] = ratios
    for c in (64, 256):
        if f"html_cpu_c{c}" in ratios:
            result.targets += [
                Target(
                    f"HTML page CPU / Tailor's, c={c}",
                    ratios[f"html_cpu_c{c}"],
                    HTML_CPU_RATIO,
                    "<=",
                ),
                Target(
                    f"JSON page CPU / Tailor's, c={c}",
                    ratios[f"json_cpu_c{c}"],
                    JSON_CPU_RATIO,
                    "<=",
                ),
                Target(f"HTML pages/s / Tailor's, c={c}", ratios[f"html_rps_c{c}"], 1.0, ">="),
            ]
    at256 = _row(result, "marquee", "html", 256)
    if at256:
        result.targets.append(Target("HTML page errors at c=256", at256["errors"], 0, "<="))
        share = at256["shed"] / max(at256["requests"], 1)
        result.targets.append(Target("HTML pages shed at c=256 (share)", share, SHED_SHARE, "<="))
    for c, over in TTFB_OVER_CATALOG_MS.items():
        row = _row(result, "marquee", "html", c)
        if row and row["ttfb_ms"] is not None:
            result.targets.append(
                Target(
                    f"HTML first byte at c={c}, ms after the catalog's own ({catalog_ttfb:.1f})",
                    round(row["ttfb_ms"] - catalog_ttfb, 2),
                    over,
                    "<=",
                )
            )
    result.extra["ratios"] = ratios
