"""The training benchmark's child process: one step per process, so the parent can read that
process's own peak memory from the kernel (``os.wait4`` rusage) and nothing else's.

``python -m bench.train_child generate --spec JSON --out DIR``   synthetic set -> DIR/*.npy
``python -m bench.train_child fit --ratings FILE|--arrays DIR --model-dir DIR``
``python -m bench.train_child load --model-dir DIR``

Each prints one JSON line of timings on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson

FIELDS = ("user_ids", "item_ids", "ratings", "timestamps")


def _vm_hwm_mb() -> float:
    """This process's peak RSS so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def cmd_generate(args: argparse.Namespace) -> dict:
    from bench.synthetic import SyntheticSpec, describe, generate

    spec = SyntheticSpec(**orjson.loads(args.spec))
    started = time.perf_counter()
    data = generate(spec)
    seconds = time.perf_counter() - started
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for name in FIELDS:
        np.save(tmp / f"{name}.npy", getattr(data, name))
    stats = describe(data)
    (tmp / "describe.json").write_bytes(orjson.dumps(stats))
    tmp.rename(out)
    return {"generate_s": round(seconds, 3), **stats}


def _load_arrays(directory: Path):
    from recommender.data import Interactions

    return Interactions(**{name: np.load(directory / f"{name}.npy") for name in FIELDS})


def cmd_fit(args: argparse.Namespace) -> dict:
    from recommender.data import data_hash, load_ratings
    from recommender.model import fit
    from recommender.registry import ModelRegistry

    started = time.perf_counter()
    if args.arrays:
        data = _load_arrays(Path(args.arrays))
        digest = f"synthetic:{Path(args.arrays).name}"
    else:
        data = load_ratings(args.ratings)
        digest = data_hash(args.ratings)
    read_s = time.perf_counter() - started
    before_fit_mb = _vm_hwm_mb()
    started = time.perf_counter()
    model = fit(data)
    fit_s = time.perf_counter() - started
    n = len(data)
    del data
    started = time.perf_counter()
    manifest = ModelRegistry(args.model_dir).register(
        model, data_hash=digest, metrics={}, trained_seconds=fit_s
    )
    save_s = time.perf_counter() - started
    return {
        "interactions": n,
        "users": model.n_users,
        "items": model.n_items,
        "read_s": round(read_s, 3),
        "fit_s": round(fit_s, 3),
        "save_s": round(save_s, 3),
        "peak_before_fit_mb": round(before_fit_mb, 1),
        "artifact_mb": round(manifest.size_bytes / 2**20, 1),
    }


def cmd_load(args: argparse.Namespace) -> dict:
    from recommender.registry import ModelRegistry

    registry = ModelRegistry(args.model_dir)
    started = time.perf_counter()
    model, _manifest = registry.load()
    load_s = time.perf_counter() - started
    probe = int(model.item_ids[len(model.item_ids) // 2])
    started = time.perf_counter()
    model.similar(probe, 10)
    first_query_ms = (time.perf_counter() - started) * 1000
    return {
        "load_s": round(load_s, 4),
        "first_query_ms": round(first_query_ms, 3),
        "mmapped": isinstance(model.neighbours, np.memmap),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_child")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--spec", required=True, help="SyntheticSpec fields as JSON")
    g.add_argument("--out", required=True)
    f = sub.add_parser("fit")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--ratings")
    src.add_argument("--arrays")
    f.add_argument("--model-dir", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--model-dir", required=True)
    args = p.parse_args(argv)
    result = {"generate": cmd_generate, "fit": cmd_fit, "load": cmd_load}[args.cmd](args)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
