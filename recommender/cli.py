"""``python -m recommender <command>``: train, evaluate, holdout, publish, rollback, list, predict,
similar, experiment (A/B tests between versions: :mod:`recommender.experiment_cli`).

``train`` is a pipeline with bounded memory: the ratings stream into numeric arrays
(``recommender.data``), the evaluation scores a sample of users in blocks, and
``--max-memory`` refuses a run whose estimated peak does not fit before it starts; the measured
peak is printed and recorded in the manifest.

``predict`` reads histories with optional rating and timestamp columns (a MovieLens ratings
file is valid input) and answers each with ``SimilarityModel.recommend_history``, the served
code path, so a user's rows give the same list as ``/v1/users/{id}/recommendations``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from recommender.data import (
    Catalog,
    Interactions,
    data_hash,
    estimate_rows,
    find_catalog,
    load_catalog,
    load_histories,
    load_ratings,
)
from recommender.evaluate import (
    PROTOCOLS,
    evaluate,
    evaluate_sample,
    format_tables,
    holdout_split,
    write_holdout,
    write_training,
)
from recommender.model import ALGORITHMS, ModelParams, SimilarityModel, choose_algorithm, fit
from recommender.registry import (
    IntegrityError,
    ModelRegistry,
    RegistryError,
)
from recommender.reload import notify_from_env
from services.platform.settings import Settings, SettingsError

DEFAULT_RATINGS = Settings.data_dir / "ratings.csv"  # the bundled data, wherever the CLI runs
MAX_K = 1000


class InputError(ValueError):
    """Bad user-supplied input (message names the line)."""


# ---- CSV input/output shared with the batch worker ----------------------------------------
def _rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    for lineno, row in enumerate(csv.reader(lines), start=1):
        cells = [c.strip() for c in row]
        if not cells or all(not c for c in cells):
            continue
        yield lineno, cells


def _is_header(cells: list[str]) -> bool:
    return not cells[0].lstrip("-").isdigit()


def parse_movie_ids(lines: Iterable[str]) -> list[int]:
    """One movie id per row (header optional), duplicates kept in order."""
    ids: list[int] = []
    for lineno, cells in _rows(lines):
        if lineno == 1 and _is_header(cells):
            continue
        if len(cells) != 1:
            raise InputError(f"line {lineno}: expected one movie id, got {len(cells)} fields")
        try:
            ids.append(int(cells[0]))
        except ValueError:
            raise InputError(
                f"line {lineno}: movie id must be an integer, got {cells[0]!r}"
            ) from None
    if not ids:
        raise InputError("no movie ids found")
    return ids


PREDICT_HEADER = ("user_id", "rank", "movie_id", "score")
SIMILAR_HEADER = ("movie_id", "rank", "similar_movie_id", "score")


def prediction_rows(
    model: SimilarityModel, histories: Interactions, k: int, ignored: list[int] | None = None
) -> Iterator[tuple[int, int, int, float]]:
    """(user_id, rank, movie_id, score) per user of ``histories``, in order of first appearance;
    movie ids the model does not know are appended to ``ignored``."""
    users = histories.user_ids
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    groups = np.split(order, bounds) if len(order) else []
    groups.sort(key=lambda g: int(g[0]))
    for rows in groups:
        rows = np.sort(rows)
        answer = model.recommend_history(
            histories.item_ids[rows],
            histories.ratings[rows],
            histories.timestamps[rows],
            k=k,
        )
        if ignored is not None:
            ignored.extend(answer.ignored)
        user = int(users[rows[0]])
        for rank, (movie, score) in enumerate(answer.items, start=1):
            yield user, rank, movie, score


def similar_rows(
    model: SimilarityModel, movie_ids: Sequence[int], k: int
) -> tuple[list[tuple[int, int, int, float]], list[int]]:
    """(movie_id, rank, similar_movie_id, score) rows, plus the unknown movie ids."""
    rows, unknown = [], []
    for movie in movie_ids:
        if not model.has_item(movie):
            unknown.append(movie)
            continue
        for rank, (other, score) in enumerate(model.similar(movie, k), start=1):
            rows.append((movie, rank, other, score))
    return rows, unknown


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Write rows atomically enough for a CLI (temp + rename); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row])
            n += 1
    os.replace(tmp, path)
    return n


# ---- commands --------------------------------------------------------------------------------
def _settings() -> Settings:
    """The install's settings, as the servers read them (the CLI signs and checks nothing with
    the secrets, so it needs none): the same model registry, wherever the command runs from."""
    try:
        return Settings.from_env(need_secrets=False)
    except SettingsError as exc:
        raise SystemExit(f"marquee: {exc}") from None


def _registry(args: argparse.Namespace) -> ModelRegistry:
    key = _settings().model_signing_key
    return ModelRegistry(Path(args.model_dir), key.encode() if key else None)


def _announce(version: str) -> None:
    """Tell running boxes at once (Redis pub/sub); without Redis they find it on their next poll."""
    notify_from_env(version)


def _params_from_args(args: argparse.Namespace) -> ModelParams:
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(ModelParams)
        if getattr(args, f.name, None) is not None
    }
    return replace(ModelParams(), **overrides)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (ru_maxrss, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(value: str) -> int:
    """``4G``, ``3.5GiB``, ``512M``, ``1000000`` (bytes) -> bytes."""
    match = _SIZE.match(value)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size like 4G or 512M, got {value!r}")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    return int(float(match.group(1)) * scale[match.group(2).lower()])


# bytes per rating row at the training peak, and the fixed part: measured with bench/training.py
# (synthetic 1M-20M rows; docs/recommender.md "Training at scale") and rounded up
BYTES_PER_ROW = 110
FIXED_BYTES = 600 << 20


def estimate_peak(rows: int, n_ease_items: int = 0, evaluate: bool = True) -> int:
    """Estimated peak RSS of ``train``: the interactions (28 B/row, and a training copy while
    evaluating), the fit's sorting and sparse matrices, kNN blocks, and a dense EASE matrix."""
    per_row = BYTES_PER_ROW + (28 if evaluate else 0)
    return FIXED_BYTES + rows * per_row + 2 * 4 * n_ease_items * n_ease_items


def _check_memory(limit: int | None, estimate: int, stage: str) -> None:
    if limit is not None and estimate > limit:
        raise MemoryLimitError(
            f"{stage}: the estimated peak is {estimate / 2**30:.2f} GiB, over --max-memory "
            f"{limit / 2**30:.2f} GiB; refusing to start (give it more memory, or train with "
            "--no-evaluate / --algorithm knn)"
        )


class MemoryLimitError(InputError):
    """A run that would not fit in ``--max-memory``."""


def _catalog(args: argparse.Namespace) -> Catalog | None:
    if getattr(args, "no_content", False):
        return None
    path = args.movies or find_catalog(args.ratings)
    if path is None:
        _log("no movies file next to the ratings: similar lists are collaborative only")
        return None
    catalog = load_catalog(path, args.tags)
    _log(f"catalog {path}: {len(catalog)} movies, {sum(1 for t in catalog.tags if t)} with tags")
    return catalog


def cmd_train(args: argparse.Namespace) -> int:
    params = _params_from_args(args)
    started = time.perf_counter()
    rows_guess = estimate_rows(args.ratings)
    _check_memory(
        args.max_memory, estimate_peak(rows_guess, 0, not args.no_evaluate), "before loading"
    )
    _log(f"loading {args.ratings} (~{rows_guess:,} rows)")
    interactions = load_ratings(args.ratings)
    digest = data_hash(args.ratings)
    catalog = _catalog(args)
    read_s = time.perf_counter() - started
    # ratings per movie (re-ratings count twice): an upper bound for the EASE size check
    popularity = np.unique(interactions.item_ids, return_counts=True)[1]
    algorithm = choose_algorithm(params, popularity)
    n_ease = int((popularity >= params.ease_min_users).sum()) if algorithm == "ease+knn" else 0
    estimate = estimate_peak(len(interactions), n_ease, not args.no_evaluate)
    _check_memory(args.max_memory, estimate, "after loading")
    _log(
        f"{len(interactions):,} ratings read in {read_s:.1f}s; algorithm {algorithm}; "
        f"estimated peak {estimate / 2**20:,.0f} MiB"
    )
    metrics: dict = {}
    evaluate_s = 0.0
    if not args.no_evaluate:
        t0 = time.perf_counter()
        _log(f"evaluating on a sample of {args.eval_users} users (strict hold-out)")
        results = evaluate_sample(interactions, params, catalog=None, max_users=args.eval_users)
        ours, pop = results["models"]["ours"], results["models"]["popularity"]
        metrics = {key: ours[key] for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")}
        metrics["hitrate@10"] = ours["hitrate@10"]
        metrics["eval_users"] = results["split"]["eval_users"]
        metrics["popularity_recall@10"] = pop["recall@10"]
        metrics["popularity_recall@20"] = pop["recall@20"]
        metrics["popularity_ndcg@20"] = pop["ndcg@20"]
        evaluate_s = time.perf_counter() - t0
        _log(
            f"| model | Recall@20 | NDCG@20 |\n|---|---|---|\n"
            f"| ours | {ours['recall@20']:.4f} | {ours['ndcg@20']:.4f} |\n"
            f"| popularity | {pop['recall@20']:.4f} | {pop['ndcg@20']:.4f} |"
        )
        del results
    _log(f"fitting on all {len(interactions):,} ratings")
    t0 = time.perf_counter()
    model = fit(interactions, params, catalog, progress=not args.quiet)
    trained = time.perf_counter() - t0
    n_rows = len(interactions)
    del interactions
    registry = _registry(args)
    training = {
        "rows": n_rows,
        "read_s": round(read_s, 3),
        "evaluate_s": round(evaluate_s, 3),
        "estimated_peak_mb": round(estimate / 2**20, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "content": catalog is not None,
    }
    manifest = registry.register(
        model,
        data_hash=digest,
        metrics=metrics,
        trained_seconds=trained,
        publish=not args.no_publish,
        training=training,
    )
    if not args.no_publish:
        _announce(manifest.version)
    state = "published" if not args.no_publish else "registered (not published)"
    _log(
        f"{state} {manifest.version}: {model.n_items} movies, {model.n_users} users, "
        f"{model.algorithm}, fit {trained:.1f}s, total {time.perf_counter() - started:.1f}s, "
        f"peak memory {peak_rss_mb():,.0f} MiB, model {manifest.size_bytes / 2**20:.1f} MiB, "
        f"in {registry.model_dir}"
    )
    print(manifest.version)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    params = _params_from_args(args)
    interactions = load_ratings(args.ratings)
    catalog = _catalog(args)
    if args.holdout:
        n = write_holdout(holdout_split(interactions, "strict"), args.holdout)
        _log(f"wrote the strict hold-out ({n} rows) to {args.holdout}")
    results = evaluate(
        interactions,
        params,
        catalog,
        protocols=args.protocol or PROTOCOLS,
        quick=args.quick,
        with_implicit=not args.no_implicit,
        with_cold=not args.no_cold,
        log=_log,
    )
    results["ratings"] = str(args.ratings)
    print(format_tables(results))
    if args.json:
        text = json.dumps(results, indent=2, default=float)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            _log(f"wrote {args.json}")
    return 0


HOLDOUT_FILES = {
    "ratings": "ratings.csv",  # the training ratings: python -m recommender train --ratings
    "holdout": "holdout.csv",  # evaluated users: history rows, then their held-out positives
    "split": "split.json",  # what was split how (protocol, counts, the source's sha256)
}


def cmd_holdout(args: argparse.Namespace) -> int:
    """Split once, write both sides: models train on ``ratings.csv`` and never see a held-out
    rating; the load tool replays ``holdout.csv``'s users against them (``--scenario replay``).
    The movies (and tags) file is copied next to the training ratings, so ``train --ratings
    DIR/ratings.csv`` finds it as it finds the bundled data's."""
    out = Path(args.out_dir)
    if (out / HOLDOUT_FILES["ratings"]).resolve() == Path(args.ratings).resolve():
        raise InputError(f"--out-dir {out} holds the source ratings: choose another directory")
    interactions = load_ratings(args.ratings)
    split = holdout_split(interactions, args.protocol, max_users=args.max_users, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = write_training(split, out / HOLDOUT_FILES["ratings"])
    held = write_holdout(split, out / HOLDOUT_FILES["holdout"])
    copied = []
    movies = args.movies or find_catalog(args.ratings)
    if movies is not None:
        for source in (Path(movies), Path(args.tags or Path(movies).parent / "tags.csv")):
            if source.is_file() and source.resolve() != (out / source.name).resolve():
                shutil.copyfile(source, out / source.name)
                copied.append(source.name)
    description = {
        **split.describe(),
        "source": str(args.ratings),
        "source_sha256": data_hash(args.ratings),
        "max_users": args.max_users,
        "seed": args.seed,
        "files": {**HOLDOUT_FILES, "copied": copied},
    }
    (out / HOLDOUT_FILES["split"]).write_text(json.dumps(description, indent=2) + "\n")
    _log(
        f"{args.protocol} hold-out of {args.ratings}: {rows:,} training ratings in "
        f"{out / HOLDOUT_FILES['ratings']}; {len(split.users)} users, "
        f"{len(split.test_items):,} held-out positives ({held:,} rows) in "
        f"{out / HOLDOUT_FILES['holdout']}"
    )
    print(out / HOLDOUT_FILES["holdout"])
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    manifest = _registry(args).publish(args.version)
    _announce(manifest.version)
    print(manifest.version)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    manifest = _registry(args).rollback()
    _announce(manifest.version)
    print(manifest.version)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    current = registry.current_version()
    out = io.StringIO()
    out.write(f"registry: {Path(args.model_dir).resolve()}\n")
    out.write(
        f"{'':2}{'version':<32}{'created':<22}{'items':>7}{'users':>8}{'recall@10':>11}"
        f"{'fit s':>8}\n"
    )
    for m in registry.manifests():
        recall = m.metrics.get("recall@10")
        recall_s = f"{recall:.4f}" if isinstance(recall, int | float) else "-"
        mark = "* " if m.version == current else "  "
        out.write(
            f"{mark}{m.version:<32}{m.created:<22}{m.n_items:>7}{m.n_users:>8}"
            f"{recall_s:>11}{m.trained_seconds:>8.2f}\n"
        )
    print(out.getvalue(), end="")
    return 0


def _load_model(args: argparse.Namespace) -> SimilarityModel:
    model, manifest = _registry(args).load(args.version)
    _log(f"model {manifest.version} ({model.n_items} movies)")
    return model


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def cmd_predict(args: argparse.Namespace) -> int:
    histories = load_histories(args.users)
    model = _load_model(args)
    ignored: list[int] = []
    n = write_csv(args.out, PREDICT_HEADER, prediction_rows(model, histories, args.k, ignored))
    users = len(np.unique(histories.user_ids))
    if ignored:
        unique = list(dict.fromkeys(ignored))
        shown = ", ".join(map(str, unique[:10])) + (" ..." if len(unique) > 10 else "")
        _log(f"warning: {len(unique)} movie id(s) unknown to the model were ignored: {shown}")
    _log(f"wrote {n} rows for {users} users to {args.out}")
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    try:
        movie_ids = parse_movie_ids(_read_lines(args.movies))
    except InputError as exc:
        raise InputError(f"{args.movies}: {exc}") from None
    model = _load_model(args)
    rows, unknown = similar_rows(model, movie_ids, args.k)
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        _log(f"warning: {len(unknown)} unknown movie id(s) skipped: {shown}")
    n = write_csv(args.out, SIMILAR_HEADER, rows)
    _log(f"wrote {n} rows to {args.out}")
    return 0


# ---- parser ------------------------------------------------------------------------------
def _k(value: str) -> int:
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be an integer, got {value!r}") from None
    if not 1 <= k <= MAX_K:
        raise argparse.ArgumentTypeError(f"k must be within 1..{MAX_K}")
    return k


def _add_param_overrides(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model parameters (defaults: ModelParams)")
    g.add_argument("--algorithm", choices=ALGORITHMS)
    g.add_argument("--ease-l2", dest="ease_l2", type=float)
    g.add_argument("--ease-neighbours", dest="ease_neighbours", type=int)
    g.add_argument("--ease-min-users", dest="ease_min_users", type=int)
    g.add_argument("--knn-weight", dest="knn_weight", type=float)
    g.add_argument("--popularity-weight", dest="popularity_weight", type=float)
    g.add_argument("--dense-max-items", dest="dense_max_items", type=int)
    g.add_argument("--blend-likes", dest="blend_likes", type=int)
    g.add_argument("--weighting", choices=("none", "tfidf", "bm25"))
    g.add_argument("--bm25-k1", dest="bm25_k1", type=float)
    g.add_argument("--bm25-b", dest="bm25_b", type=float)
    g.add_argument("--similarity", choices=("cosine", "dot"))
    g.add_argument("--alpha", type=float)
    g.add_argument("--shrinkage", type=float)
    g.add_argument("--neighbours", type=int)
    g.add_argument("--min-rating", dest="min_rating", type=float)
    g.add_argument("--recency-half-life", dest="recency_half_life", type=float)


def _add_catalog(p: argparse.ArgumentParser) -> None:
    p.add_argument("--movies", help="movies.csv / movies.dat / u.item (default: next to --ratings)")
    p.add_argument("--tags", help="tags.csv (default: next to the movies file)")
    p.add_argument(
        "--no-content", action="store_true", help="no content model (similar lists: kNN only)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recommender", description="Marquee recommender: offline tools"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def model_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model-dir",
            default=_settings().model_dir,
            help="model registry directory (env MARQUEE_MODEL_DIR, else var/models)",
        )

    p = sub.add_parser("train", help="evaluate on a sample, fit on all ratings, register, publish")
    p.add_argument(
        "--ratings",
        default=DEFAULT_RATINGS,
        help="ratings.csv, ratings.dat, u.data or Parquet (userId,movieId,rating,timestamp)",
    )
    _add_catalog(p)
    model_dir(p)
    p.add_argument("--no-publish", action="store_true", help="register without publishing")
    p.add_argument("--no-evaluate", action="store_true", help="skip the hold-out evaluation")
    p.add_argument(
        "--eval-users",
        type=int,
        default=2000,
        help="users in the evaluation sample (strict hold-out; default 2000)",
    )
    p.add_argument(
        "--max-memory",
        type=parse_size,
        help="refuse to start when the estimated peak exceeds this (e.g. 4G)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_param_overrides(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="tuned peer table on both hold-out protocols, cold users and movies"
    )
    p.add_argument("--ratings", default=DEFAULT_RATINGS)
    _add_catalog(p)
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON ('-' = stdout)")
    p.add_argument(
        "--holdout",
        metavar="FILE",
        help="also write the strict hold-out as CSV (user_id,movie_id,rating,timestamp,part)",
    )
    p.add_argument(
        "--protocol", action="append", choices=PROTOCOLS, help="only this protocol (repeatable)"
    )
    p.add_argument("--quick", action="store_true", help="tiny grids (a smoke test, not a result)")
    p.add_argument("--no-implicit", action="store_true", help="leave out implicit's ALS / BM25")
    p.add_argument("--no-cold", action="store_true", help="leave out cold users / cold movies")
    _add_param_overrides(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "holdout",
        help="write a chronological hold-out: training ratings + held-out users (for replays)",
    )
    p.add_argument("--ratings", default=DEFAULT_RATINGS)
    p.add_argument("--movies", help="movies file to copy next to the training ratings")
    p.add_argument("--tags", help="tags.csv to copy (default: next to the movies file)")
    p.add_argument(
        "--out-dir",
        required=True,
        help="writes ratings.csv (training), holdout.csv (user_id,movie_id,rating,timestamp,"
        "part) and split.json",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="strict",
        help="strict (default): an evaluated user's ratings after their first held-out positive "
        "are left out of training too",
    )
    p.add_argument(
        "--max-users", type=int, help="hold out a random sample of this many eligible users"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-users sample")
    p.set_defaults(func=cmd_holdout)

    p = sub.add_parser("publish", help="make a registered version current")
    p.add_argument("version")
    model_dir(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("rollback", help="go back to the previously published version")
    model_dir(p)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("list", help="registered versions (* = current)")
    model_dir(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("predict", help="offline recommendations for user histories (CSV)")
    model_dir(p)
    p.add_argument("--version", help="model version (default: current)")
    p.add_argument(
        "--users",
        required=True,
        help="histories: user_id,movie_id[,rating[,timestamp]] rows, header optional "
        "(a MovieLens ratings file is valid)",
    )
    p.add_argument("--k", type=_k, default=10)
    p.add_argument("--out", required=True, help="output CSV: user_id,rank,movie_id,score")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("similar", help="offline similar movies (CSV)")
    model_dir(p)
    p.add_argument("--version", help="model version (default: current)")
    p.add_argument("--movies", required=True, help="CSV with one movie id per row")
    p.add_argument("--k", type=_k, default=10)
    p.add_argument("--out", required=True, help="output CSV: movie_id,rank,similar_movie_id,score")
    p.set_defaults(func=cmd_similar)

    from recommender.experiment_cli import add_parser as add_experiment

    add_experiment(sub, _settings().model_dir)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory (see train --max-memory)", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc.filename or exc}: no such file", file=sys.stderr)
        return 2
    except (IntegrityError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
