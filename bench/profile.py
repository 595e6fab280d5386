"""Benchmark 7 — where a movie page's CPU goes: py-spy samples the web server (microservices mode,
shipped defaults) while wrk holds c=64 on the HTML page against the composition benchmark's stubs,
and each sample is charged to one part of the work, so a change's saving shows up by name.

A sample is charged to the innermost frame that belongs to a named part (so JSON decoding inside
a backend call counts as JSON, not as the call); samples in no named part are aiohttp's server
(parsing, routing, its own writes) or the event loop. py-spy samples only running threads, so
shares are shares of CPU, and share x the run's CPU per page is that part's cost per page.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import wrk
from bench.composition import _composers, _stubs
from bench.context import SECRET, Context, ranked_movies
from bench.procs import cpu_seconds
from bench.report import BenchResult, Column
from bench.workload import zipf_ids

RATE_HZ = 200
SECONDS = 15.0
CONCURRENCY = 64

# (part, pattern over "function (file:line)"), innermost match wins; order breaks ties within a
# frame. Patterns name the project's modules and the libraries each part uses.
PARTS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern))
    for name, pattern in [
        ("JSON decode/encode", r"msgspec|orjson|/json/"),
        ("session / CSRF (HMAC)", r"platform/auth\.py|hmac\.py|web_server/session"),
        ("metrics", r"platform/metrics\.py|prometheus_client"),
        ("logging", r"platform/logs\.py|/logging/"),
        ("template render", r"jinja2|web_server/render\.py|web_server/stencil\.py|markupsafe"),
        ("page fragments / caches", r"web_server/fragments\.py|platform/lru\.py"),
        (
            "backend calls (client, pool, breaker)",
            r"platform/http_client\.py|platform/http_pool\.py|platform/circuit\.py"
            r"|web_server/clients\.py|httptools",
        ),
        ("composition (fan-out, deadlines)", r"web_server/composer\.py"),
        ("page handler", r"web_server/pages\.py|web_server/streaming"),
        ("middleware", r"platform/middleware\.py|web_middlewares"),
        ("streaming writes", r"web_response\.py|http_writer\.py|StreamResponse"),
        ("aiohttp server (parse, route)", r"aiohttp/"),
        ("event loop", r"asyncio/|uvloop"),
    ]
]
OTHER = "other"

COLUMNS = [
    Column("part", "part"),
    Column("share", "share %", "{:.1f}"),
    Column("us_per_page", "µs/page", "{:.0f}"),
]


def charge(stack: list[str]) -> str:
    """The part a sampled stack (outermost first) is charged to."""
    for frame in reversed(stack):
        for name, pattern in PARTS:
            if pattern.search(frame):
                return name
    return OTHER


def parse_raw(text: str) -> Counter[str]:
    """py-spy's raw (collapsed) output -> samples per part."""
    parts: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            parts[charge(stack.split(";"))] += int(count)
    return parts


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def run(ctx: Context) -> BenchResult:
    from services.platform.auth import session_token

    started = time.perf_counter()
    result = BenchResult(
        "profile", f"Where the HTML page's CPU goes (py-spy, c={CONCURRENCY})", COLUMNS
    )
    spy = _py_spy()
    if spy is None:
        result.notes.append("py-spy is not installed (the bench extra); nothing measured")
        return result
    ids = zipf_ids(ranked_movies(ctx.model_dir), 20_000)
    cookie = {"Cookie": f"marquee_session={session_token(1, SECRET)}"}
    stubs, urls = _stubs(ctx)
    web = next(c.server for c in _composers(ctx, urls, None) if c.label == "marquee")
    raw = ctx.workdir / "profile.raw"
    try:
        web.start()
        url = f"http://127.0.0.1:{web.port}"
        script = wrk.write_script(ctx.workdir, "profile", [f"/movies/{i}" for i in ids], cookie)
        wrk.run_wrk(url, script, connections=CONCURRENCY, duration=ctx.duration(4.0))
        seconds = ctx.duration(SECONDS)
        load = subprocess.Popen(
            wrk.command(
                url, script, connections=CONCURRENCY, duration=seconds + 2, cpus=ctx.cpus.load
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # the load is on before sampling starts
        cpu_before = cpu_seconds(web.pid)
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(web.pid),
                "--rate",
                str(RATE_HZ),
                "--duration",
                f"{seconds:g}",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(raw),
            ],
            check=True,
            capture_output=True,
        )
        cpu = cpu_seconds(web.pid) - cpu_before
        out, _ = load.communicate()
        pages = wrk.parse(out).rps * seconds
    finally:
        web.stop()
        stubs.stop()
    parts = parse_raw(raw.read_text())
    total = sum(parts.values()) or 1
    per_page_us = cpu / max(pages, 1) * 1e6
    for name, samples in parts.most_common():
        share = samples / total
        result.rows.append(
            {
                "part": name,
                "share": round(share * 100, 1),
                "us_per_page": round(share * per_page_us),
            }
        )
    result.extra["cpu_us_per_page"] = round(per_page_us)
    result.notes += [
        f"{total:,} samples at {RATE_HZ} Hz over {seconds:g} s; {pages:,.0f} pages; "
        f"web server CPU {per_page_us:.0f} µs/page while sampled (py-spy adds a little)",
        "a sample is charged to the innermost frame of a named part (see bench/profile.py)",
    ]
    result.seconds = time.perf_counter() - started
    return result
