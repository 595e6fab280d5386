"""Run the benchmarks, print a table and one JSON line each, save ``var/bench/latest.json``."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench.context import Context
from bench.procs import PROJECT_ROOT
from bench.report import BenchResult, environment, json_line, table, write_results

# name -> module; run in this order (training last: it is the long one)
BENCHMARKS = {
    "recommender": "bench.serving",
    "composition": "bench.composition",
    "deployment": "bench.deployment",
    "scaling": "bench.scaling",
    "loadgen": "bench.loadgen",
    "profile": "bench.profile",
    "training": "bench.training",
}
LATEST = PROJECT_ROOT / "var" / "bench" / "latest.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        help="run only this benchmark (repeatable)",
    )
    p.add_argument(
        "--quick", action="store_true", help="shorter runs and the 2M-interaction synthetic set"
    )
    p.add_argument(
        "--json-out",
        type=Path,
        default=LATEST,
        help=f"where to write all results (default {LATEST.relative_to(PROJECT_ROOT)})",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    return p


def _check_tools() -> list[str]:
    """wrk and redis-server; installed from Debian when missing and running as root."""
    missing = [tool for tool in ("wrk", "redis-server") if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"# installing {' '.join(missing)} (apt-get)", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *missing], check=False, stdout=subprocess.DEVNULL
        )
        missing = [tool for tool in missing if shutil.which(tool) is None]
    return [f"{tool} is not installed (apt-get install -y {tool})" for tool in missing]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = args.only or list(BENCHMARKS)
    problems = _check_tools()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="marquee-bench-"))
    ctx = Context(workdir=workdir, quick=args.quick)
    print(
        f"# marquee bench: {', '.join(names)}{' (quick)' if args.quick else ''}; "
        f"{ctx.cpus.describe()}; scratch {workdir}",
        flush=True,
    )
    results: list[BenchResult] = []
    failed: list[str] = []
    started = time.perf_counter()
    try:
        for name in names:
            module = importlib.import_module(BENCHMARKS[name])
            try:
                result = module.run(ctx)
            except Exception as exc:  # one broken benchmark must not lose the others' figures
                traceback.print_exc()
                failed.append(name)
                result = BenchResult(
                    name, f"{name}: FAILED", [], notes=[f"{type(exc).__name__}: {exc}"[:500]]
                )
            results.append(result)
            print()
            print(table(result))
            print(json_line(result), flush=True)
    finally:
        ctx.close()
        if not args.keep and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        **environment(),
        "quick": args.quick,
        "cpus": ctx.cpus.describe(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(results, args.json_out, meta)
    missed = [f"{r.bench}: {t.name}" for r in results for t in r.targets if t.met is False]
    print(f"\n# {len(results)} benchmarks in {meta['seconds']:.0f} s; results: {args.json_out}")
    if missed:
        print("# targets missed: " + "; ".join(missed))
    if failed:
        print(f"# failed: {', '.join(failed)} (logs kept in {workdir})")
    return 1 if failed else 0
