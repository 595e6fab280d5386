"""The training benchmark's child process: one step per process, so the parent can read that
process's own peak memory from the kernel (``os.wait4`` rusage) and nothing else's.

``python -m bench.train_child generate --spec JSON --out DIR``   synthetic set -> DIR/*.npy
``python -m bench.train_child csv --arrays DIR --out FILE``      the set as a ratings.csv
``python -m bench.train_child train --ratings FILE --model-dir DIR``   the operator's command,
    ``python -m recommender train`` (evaluation on a sample included), run in this process
``python -m bench.train_child fit --ratings FILE --model-dir DIR``     a model for the serving
    benchmarks (fit and register, no evaluation)
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


def cmd_csv(args: argparse.Namespace) -> dict:
    """Write the arrays as ``userId,movieId,rating,timestamp`` (via a temp name, then rename)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    started = time.perf_counter()
    data = _load_arrays(Path(args.arrays))
    table = pa.table(
        {
            "userId": data.user_ids,
            "movieId": data.item_ids,
            "rating": data.ratings,
            "timestamp": data.timestamps,
        }
    )
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"userId,movieId,rating,timestamp\n")
        pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    tmp.rename(out)
    return {"csv_s": round(time.perf_counter() - started, 3), "bytes": out.stat().st_size}


def cmd_train(args: argparse.Namespace) -> dict:
    """``python -m recommender train`` exactly as an operator runs it, then its manifest."""
    import contextlib
    import io

    from recommender.cli import main as recommender_main
    from recommender.registry import ModelRegistry

    started = time.perf_counter()
    argv = ["train", "--ratings", args.ratings, "--model-dir", args.model_dir, "--quiet"]
    argv += ["--eval-users", str(args.eval_users)]
    version = io.StringIO()
    with contextlib.redirect_stdout(version):
        code = recommender_main(argv)
    if code != 0:
        raise SystemExit(code)
    total_s = time.perf_counter() - started
    manifest = ModelRegistry(args.model_dir).manifest(version.getvalue().strip())
    training = manifest.training
    return {
        "total_s": round(total_s, 3),
        "interactions": training["rows"],
        "users": manifest.n_users,
        "items": manifest.n_items,
        "algorithm": manifest.algorithm,
        "read_s": training["read_s"],
        "evaluate_s": training["evaluate_s"],
        "fit_s": round(manifest.trained_seconds, 3),
        "estimated_peak_mb": training["estimated_peak_mb"],
        "reported_peak_mb": training["peak_rss_mb"],
        "artifact_mb": round(manifest.size_bytes / 2**20, 1),
        "recall@20": manifest.metrics.get("recall@20"),
        "popularity_recall@20": manifest.metrics.get("popularity_recall@20"),
        "eval_users": manifest.metrics.get("eval_users"),
    }


def cmd_fit(args: argparse.Namespace) -> dict:
    """Fit (with the movies next to the ratings, when there) and register, no evaluation."""
    from recommender.data import data_hash, find_catalog, load_catalog, load_ratings
    from recommender.model import fit
    from recommender.registry import ModelRegistry

    started = time.perf_counter()
    data = load_ratings(args.ratings)
    movies = find_catalog(args.ratings)
    catalog = load_catalog(movies) if movies else None
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    model = fit(data, catalog=catalog)
    fit_s = time.perf_counter() - started
    manifest = ModelRegistry(args.model_dir).register(
        model, data_hash=data_hash(args.ratings), metrics={}, trained_seconds=fit_s
    )
    return {
        "interactions": len(data),
        "read_s": round(read_s, 3),
        "fit_s": round(fit_s, 3),
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
        "mmapped": isinstance(model.similar_lists.indices, np.memmap),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_child")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--spec", required=True, help="SyntheticSpec fields as JSON")
    g.add_argument("--out", required=True)
    c = sub.add_parser("csv")
    c.add_argument("--arrays", required=True)
    c.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("--ratings", required=True)
    t.add_argument("--model-dir", required=True)
    t.add_argument("--eval-users", type=int, default=2000)
    f = sub.add_parser("fit")
    f.add_argument("--ratings", required=True)
    f.add_argument("--model-dir", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--model-dir", required=True)
    args = p.parse_args(argv)
    commands = {
        "generate": cmd_generate,
        "csv": cmd_csv,
        "train": cmd_train,
        "fit": cmd_fit,
        "load": cmd_load,
    }
    result = commands[args.cmd](args)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
