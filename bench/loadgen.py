"""Benchmark — what the load generator itself costs: CPU per request, ``python -m loadtest`` vs wrk.

A load generator's CPU comes out of the machine it measures (here, the other core of two), so it
must be cheap. Same run, same server (the bare aiohttp ``baseline``, pinned to the server CPU),
same request targets, generator pinned to the load CPU, at 1,000 and 3,000 req/s; each generator
runs three times per rate, interleaved, and the table shows medians (a shared machine drifts):

- ``wrk``: C and epoll. It has no rate control (wrk2 does, but wrk2 is not packaged for Debian and
  its source cannot be fetched here), so each connection waits a fixed think time between
  requests (Lua ``delay()``), with the connection count calibrated in a short first pass so the
  achieved rate matches the target. Its CPU is the whole process (``wait4``), start-up included;
  a C program starts in about a millisecond.
- ``loadtest --paths``: our engine replaying the same targets (open model, constant arrivals).
- ``loadtest --mix similar``: our engine building each request from the scenario code.

Our CPU is the tool's own figure for the sending phase (``generator.cpu_us_per_request``,
getrusage around the run), so the ~0.4 s of Python start-up and imports is left out; the
whole-process figure is shown beside it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

import orjson

from bench import wrk
from bench.context import DATA_DIR, Context
from bench.procs import PROJECT_ROOT, PYTHON, free_port, pinned, python_server, service_env
from bench.report import BenchResult, Column, Target
from bench.workload import movies_by_popularity, zipf_ids

RATES = (1000, 3000)
ROUNDS = 3  # each generator runs this many times per rate; the table shows medians
TARGET_RATE = 3000
CPU_RATIO_LIMIT = 2.0
THINK_MS = 10

COLUMNS = [
    Column("generator", "generator"),
    Column("rate", "target/s", "{:,.0f}"),
    Column("rps", "achieved/s", "{:,.0f}"),
    Column("cpu_us", "CPU µs/req", "{:.1f}"),
    Column("cpu_us_process", "whole process", "{:.1f}"),
    Column("ratio", "vs wrk", "{:.2f}x"),
    Column("p99_ms", "p99 ms", "{:.2f}"),
    Column("lag_p99_ms", "send lag p99", "{:.2f}"),
]

DELAY_LUA = """
local think = %(think)d
function delay() return think end
"""


def measured(args: list[str], cpus: tuple[int, ...], out: Path, timeout: float) -> float:
    """Run a child to completion; its own CPU seconds (user + system, from ``wait4``)."""
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            pinned(args, cpus), stdout=fh, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
        )
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"{args[0]} ran longer than {timeout:g}s")
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def wrk_script(workdir: Path, paths: list[str]) -> Path:
    """The replay script of ``bench.wrk`` plus a think time per connection."""
    script = wrk.write_script(workdir, "loadgen", paths)
    script.write_text(script.read_text() + DELAY_LUA % {"think": THINK_MS})
    return script


def run_wrk(ctx: Context, url: str, script: Path, connections: int, seconds: float) -> dict:
    out = ctx.workdir / f"wrk-{connections}.out"
    cpu = measured(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "-s", str(script), url],
        ctx.cpus.load,
        out,
        seconds + 60,
    )
    for line in out.read_text().splitlines():
        if line.startswith(wrk.MARK):
            data = orjson.loads(line[len(wrk.MARK) :])
            n = int(data["requests"])
            return {
                "rps": n / (data["duration_us"] / 1e6),
                "cpu_us": cpu * 1e6 / max(n, 1),
                "cpu_us_process": cpu * 1e6 / max(n, 1),
                "p99_ms": data["latency_us"]["p99"] / 1000,
                "errors": sum(data["errors"].values()),
            }
    raise RuntimeError(f"wrk gave no result: {out.read_text()[-1000:]}")


def calibrate(ctx: Context, url: str, script: Path, rate: int) -> int:
    """Connections for wrk to reach ``rate`` with the think time: two short probing runs
    (a connection's rate depends on how late the machine fires wrk's timers)."""
    conns = max(1, round(rate * (THINK_MS + 1) / 1000))
    for _ in range(2):
        achieved = run_wrk(ctx, url, script, conns, 2)["rps"]
        conns = max(1, round(conns * rate / max(achieved, 1.0)))
    return conns


def wrk_at(ctx: Context, url: str, script: Path, rate: int, conns: int, seconds: float):
    """A wrk run within 10 % of ``rate`` (CPU per request falls as the rate rises, so the
    comparison is only fair at the same rate): re-aimed up to twice when the machine's load
    moved wrk's pace. Returns the figures and the connection count that got there."""
    for _ in range(3):
        w = run_wrk(ctx, url, script, conns, seconds)
        if abs(w["rps"] / rate - 1) <= 0.1:
            break
        conns = max(1, round(conns * rate / max(w["rps"], 1.0)))
    return w, conns


def run_tool(ctx: Context, url: str, extra: list[str], rate: int, seconds: float) -> dict:
    name = f"loadtest-{rate}-{'paths' if '--paths' in extra else 'mix'}"
    out_json = ctx.workdir / f"{name}.json"
    args = [
        PYTHON,
        "-m",
        "loadtest",
        "--base-url",
        url,
        "--rate",
        str(rate),
        "--duration",
        f"{seconds:g}s",
        "--no-progress",
        "--max-send-lag",
        "1h",
        "--out",
        str(out_json),
        "--data-dir",
        str(DATA_DIR),
        *extra,
    ]
    cpu = measured(args, ctx.cpus.load, ctx.workdir / f"{name}.out", seconds + 60)
    res = orjson.loads(out_json.read_bytes())
    gen = res["generator"]
    lat = res["total"]["latency_ms"] or {}
    return {
        "rps": res["total"]["throughput_rps"],
        "cpu_us": gen["cpu_us_per_request"],
        "cpu_us_process": cpu * 1e6 / max(gen["http_requests"], 1),
        "p99_ms": lat.get("p99"),
        "lag_p99_ms": (gen["send_lag_ms"] or {}).get("p99"),
        "errors": res["total"]["error_count"],
    }


def open_loop(
    url: str, paths_file: Path, rate: float, duration: float, *, cpus: tuple[int, ...], out: Path
) -> dict:
    """The benchmarks' open-loop load: ``python -m loadtest --paths`` in a pinned child process.

    Returns the row figures (rps, p50/p90/p99 ms, errors) plus the generator's health, so a
    benchmark that reports a latency also sees whether the generator kept up.
    """
    args = [
        PYTHON, "-m", "loadtest", "--base-url", url, "--paths", str(paths_file),
        "--rate", f"{rate:.0f}", "--duration", f"{duration:g}s", "--connections", "32",
        "--no-progress", "--max-send-lag", "1h", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        pinned(args, cpus), capture_output=True, text=True, timeout=duration + 60, cwd=PROJECT_ROOT
    )
    if proc.returncode not in (0, 1) or not out.exists():
        raise RuntimeError(f"loadtest failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = orjson.loads(out.read_bytes())
    lat = res["total"]["latency_ms"] or {}
    gen = res["generator"]
    return {
        "rps": res["total"]["throughput_rps"],
        "p50_ms": lat.get("p50"),
        "p90_ms": lat.get("p90"),
        "p99_ms": lat.get("p99"),
        "errors": res["total"]["error_count"],
        "send_lag_p99_ms": (gen["send_lag_ms"] or {}).get("p99"),
        "valid": res["valid"],
    }


def _median(runs: list[dict]) -> dict:
    """Per figure, the median over the rounds (errors: the sum)."""
    out: dict = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        if key == "errors":
            out[key] = sum(values)
        else:
            out[key] = statistics.median(values) if values else None
    return out


def run(ctx: Context) -> BenchResult:
    started = time.perf_counter()
    result = BenchResult("loadgen", "Load generator CPU per request: loadtest vs wrk", COLUMNS)
    seconds = ctx.duration(6.0)
    ranked = movies_by_popularity(DATA_DIR / "ratings.csv")
    paths = [f"/v1/similar/{int(m)}?k=10" for m in zipf_ids(ranked, 20_000)]
    paths_file = ctx.workdir / "loadgen.paths"
    paths_file.write_text("\n".join(paths) + "\n")
    script = wrk_script(ctx.workdir, paths)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = python_server(
        "loadgen-baseline",
        ["bench.servers", "baseline", "--port", str(port)],
        env=service_env(),
        port=port,
        logs=ctx.logs,
        cpus=ctx.cpus.server,
    ).start()
    rows = []
    tools = (
        ("loadtest --paths", ["--paths", str(paths_file)]),
        ("loadtest --mix similar", ["--mix", "similar=1"]),
    )
    rounds = 1 if ctx.quick else ROUNDS
    try:
        for rate in RATES:
            conns = calibrate(ctx, url, script, rate)
            runs: dict[str, list[dict]] = {"wrk": [], **{label: [] for label, _ in tools}}
            for _ in range(rounds):  # interleaved, so drift on a shared machine hits all alike
                w, conns = wrk_at(ctx, url, script, rate, conns, seconds)
                runs["wrk"].append({**w, "ratio": 1.0, "lag_p99_ms": None})
                for label, extra in tools:
                    t = run_tool(ctx, url, extra, rate, seconds)
                    runs[label].append({**t, "ratio": t["cpu_us"] / w["cpu_us"]})
            for label, measured_runs in runs.items():
                name = f"wrk, c={conns}, {THINK_MS} ms think" if label == "wrk" else label
                rows.append({"generator": name, "rate": rate, **_median(measured_runs)})
    finally:
        server.stop()
    result.rows = rows
    at_target = next(
        r for r in rows if r["rate"] == TARGET_RATE and r["generator"] == "loadtest --paths"
    )
    result.targets = [
        Target(
            f"loadtest CPU per request / wrk's at {TARGET_RATE:,}/s",
            at_target["ratio"],
            CPU_RATIO_LIMIT,
            "<=",
        ),
    ]
    result.notes += [
        f"{ctx.cpus.describe()}; {seconds:g} s per run, {rounds} interleaved rounds per rate, "
        "medians (ratio: median of the rounds' ratios); server: bare aiohttp baseline",
        "wrk (not wrk2: no Debian package, and its source cannot be downloaded here) is closed "
        f"loop with a {THINK_MS} ms think time per connection, connections calibrated to the "
        "rate; loadtest is open loop (constant arrivals, latency from the intended time)",
        "CPU µs/req: wrk whole process; loadtest its sending phase (whole process beside it)",
        f"errors: {', '.join(str(r['errors']) for r in rows)}",
    ]
    result.seconds = time.perf_counter() - started
    return result
