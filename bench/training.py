"""Benchmark 4 — training: fit time and peak memory per dataset, and the memory-mapped load.

Every step runs in its own child process (``bench.train_child``) so the peak RSS reported is that
step's alone, read from the kernel when the child is reaped. The synthetic set is generated once
per spec and kept under ``var/bench/cache`` (it is deterministic), so repeated runs time the fit,
not the generator.
"""

from __future__ import annotations

import shutil
import time

import orjson

from bench.context import DATA_DIR, ML1M_DIR, Context, run_child
from bench.report import BenchResult, Column, Target
from bench.synthetic import FULL, QUICK

FIT_LIMIT_S = 300.0
PEAK_LIMIT_MB = 8 * 1024.0

COLUMNS = [
    Column("dataset", "dataset"),
    Column("interactions", "interactions", "{:,}"),
    Column("users", "users", "{:,}"),
    Column("items", "items", "{:,}"),
    Column("read_s", "read s", "{:.2f}"),
    Column("fit_s", "fit s", "{:.1f}"),
    Column("save_s", "save s", "{:.2f}"),
    Column("peak_mb", "peak MB", "{:,.0f}"),
    Column("artifact_mb", "model MB", "{:,.1f}"),
    Column("load_ms", "load ms", "{:.1f}"),
    Column("load_peak_mb", "load RSS MB", "{:,.0f}"),
]


def _fit_and_load(ctx: Context, name: str, source: list[str]) -> dict:
    model_dir = ctx.workdir / f"train-{name}"
    shutil.rmtree(model_dir, ignore_errors=True)
    fit = run_child(
        ["bench.train_child", "fit", *source, "--model-dir", str(model_dir)],
        log=ctx.logs / f"train-{name}.log",
    )
    load = run_child(
        ["bench.train_child", "load", "--model-dir", str(model_dir)],
        log=ctx.logs / f"load-{name}.log",
    )
    shutil.rmtree(model_dir, ignore_errors=True)
    out = fit.output
    return {
        "dataset": name,
        "interactions": out["interactions"],
        "users": out["users"],
        "items": out["items"],
        "read_s": out["read_s"],
        "fit_s": out["fit_s"],
        "save_s": out["save_s"],
        "peak_mb": round(fit.maxrss_mb, 1),
        "peak_before_fit_mb": out["peak_before_fit_mb"],
        "artifact_mb": out["artifact_mb"],
        "load_ms": round(load.output["load_s"] * 1000, 1),
        "load_peak_mb": round(load.maxrss_mb, 1),
        "mmapped": load.output["mmapped"],
        "first_query_ms": load.output["first_query_ms"],
    }


def _synthetic_arrays(ctx: Context, result: BenchResult) -> tuple[str, list[str]]:
    spec = QUICK if ctx.quick else FULL
    directory = ctx.cache_dir / f"synthetic-{spec.key()}"
    if not (directory / "describe.json").exists():
        ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(directory.with_name(directory.name + ".tmp"), ignore_errors=True)
        gen = run_child(
            [
                "bench.train_child",
                "generate",
                "--spec",
                orjson.dumps(spec.to_dict()).decode(),
                "--out",
                str(directory),
            ],
            log=ctx.logs / "generate.log",
        )
        result.extra["synthetic_generate"] = {
            "seconds": gen.output["generate_s"],
            "peak_mb": round(gen.maxrss_mb, 1),
        }
    stats = orjson.loads((directory / "describe.json").read_bytes())
    result.extra["synthetic"] = {"spec": spec.to_dict(), **stats}
    label = f"synthetic {spec.interactions / 1e6:g}M"
    result.notes.append(
        f"{label}: {spec.users:,} users, {spec.items:,} items, Zipf items (top 1% = "
        f"{stats['top1pct_items_share']:.0%} of interactions), Pareto users (median "
        f"{stats['user_median']:g}, max {stats['user_max']:,})"
    )
    return label, ["--arrays", str(directory)]


def run(ctx: Context) -> BenchResult:
    started = time.perf_counter()
    result = BenchResult("training", "Training: fit time, peak memory, memory-mapped load", COLUMNS)
    result.rows.append(
        _fit_and_load(ctx, "ml-latest-small", ["--ratings", str(DATA_DIR / "ratings.csv")])
    )
    ml1m = ML1M_DIR / "ratings.dat"
    if ml1m.exists():
        result.rows.append(_fit_and_load(ctx, "ml-1m", ["--ratings", str(ml1m)]))
    else:
        result.notes.append(f"ml-1m skipped: {ml1m} is not present")
    label, source = _synthetic_arrays(ctx, result)
    synthetic = _fit_and_load(ctx, label, source)
    result.rows.append(synthetic)
    if not ctx.quick:
        result.targets += [
            Target("synthetic 20M fit seconds", synthetic["fit_s"], FIT_LIMIT_S, "<="),
            Target("synthetic 20M peak MB", synthetic["peak_mb"], PEAK_LIMIT_MB, "<="),
        ]
    else:
        result.notes.append(
            "--quick: 2M-interaction synthetic set; the 20M targets are checked "
            "only in the full run"
        )
    result.notes.append(
        "peak MB = the fit process's max RSS (data + model + fit temporaries); "
        "load RSS = a fresh process after a verified, memory-mapped load"
    )
    result.seconds = time.perf_counter() - started
    return result
