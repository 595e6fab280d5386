"""``python -m recommender <command>``: train, evaluate, publish, rollback, list, predict, similar.

The CSV helpers (``parse_histories``, ``parse_movie_ids``, ``prediction_rows``,
``similar_rows``) are public so the batch worker computes offline predictions with exactly the
same parsing and output format as the CLI.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path

from recommender.data import data_hash, load_ratings
from recommender.evaluate import evaluate, format_table
from recommender.model import ModelParams, SimilarityModel, fit
from recommender.registry import (
    IntegrityError,
    ModelRegistry,
    RegistryError,
    signing_key_from_env,
)
from recommender.reload import notify_from_env

DEFAULT_RATINGS = Path("data/ml-latest-small/ratings.csv")
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


def parse_histories(lines: Iterable[str]) -> dict[int, list[int]]:
    """``user_id,movie_id`` rows (header optional) -> histories in row order (oldest first)."""
    histories: dict[int, list[int]] = {}
    for lineno, cells in _rows(lines):
        if lineno == 1 and _is_header(cells):
            continue
        if len(cells) != 2:
            raise InputError(f"line {lineno}: expected 'user_id,movie_id', got {len(cells)} fields")
        try:
            user, movie = int(cells[0]), int(cells[1])
        except ValueError:
            raise InputError(
                f"line {lineno}: user_id and movie_id must be integers, got {','.join(cells)!r}"
            ) from None
        histories.setdefault(user, []).append(movie)
    if not histories:
        raise InputError("no user_id,movie_id rows found")
    return histories


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
    model: SimilarityModel, histories: dict[int, list[int]], k: int
) -> Iterator[tuple[int, int, int, float]]:
    """(user_id, rank, movie_id, score) for each history; unknown movies in it are ignored."""
    for user, history in histories.items():
        for rank, (movie, score) in enumerate(model.recommend(history, k), start=1):
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
def _default_model_dir() -> Path:
    return Path(os.environ.get("MARQUEE_MODEL_DIR") or "var/models")


def _registry(args: argparse.Namespace) -> ModelRegistry:
    return ModelRegistry(Path(args.model_dir), signing_key_from_env())


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


def cmd_train(args: argparse.Namespace) -> int:
    params = _params_from_args(args)
    _log(f"loading {args.ratings}")
    interactions = load_ratings(args.ratings)
    digest = data_hash(args.ratings)
    metrics: dict = {}
    if not args.no_evaluate:
        _log("evaluating on the chronological hold-out")
        results = evaluate(interactions, params, reference=None)
        ours, pop = results["models"]["ours"], results["models"]["popularity"]
        metrics = {
            key: ours[key]
            for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "hitrate@10", "coverage@10")
        }
        metrics["eval_users"] = results["protocol"]["eval_users"]
        metrics["popularity_recall@10"] = pop["recall@10"]
        metrics["popularity_ndcg@10"] = pop["ndcg@10"]
        _log(format_table(results))
    _log(f"fitting on all {len(interactions)} ratings")
    t0 = time.perf_counter()
    model = fit(interactions, params, progress=not args.quiet)
    trained = time.perf_counter() - t0
    registry = _registry(args)
    manifest = registry.register(
        model,
        data_hash=digest,
        metrics=metrics,
        trained_seconds=trained,
        publish=not args.no_publish,
    )
    if not args.no_publish:
        _announce(manifest.version)
    state = "published" if not args.no_publish else "registered (not published)"
    _log(
        f"{state} {manifest.version}: {model.n_items} movies, {model.n_users} users, "
        f"fit {trained:.2f}s, in {registry.model_dir}"
    )
    print(manifest.version)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    params = _params_from_args(args)
    interactions = load_ratings(args.ratings)
    results = evaluate(interactions, params, include_ease=args.ease)
    results["ratings"] = str(args.ratings)
    print(format_table(results))
    if args.json:
        text = json.dumps(results, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            _log(f"wrote {args.json}")
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
    out.write(
        f"{'':2}{'version':<32}{'created':<22}{'items':>7}{'users':>8}{'recall@10':>11}"
        f"{'fit s':>8}\n"
    )
    for m in registry.list():
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
    try:
        histories = parse_histories(_read_lines(args.users))
    except InputError as exc:
        raise InputError(f"{args.users}: {exc}") from None
    model = _load_model(args)
    n = write_csv(args.out, PREDICT_HEADER, prediction_rows(model, histories, args.k))
    _log(f"wrote {n} rows for {len(histories)} users to {args.out}")
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
    g.add_argument("--weighting", choices=("none", "tfidf", "bm25"))
    g.add_argument("--bm25-k1", dest="bm25_k1", type=float)
    g.add_argument("--bm25-b", dest="bm25_b", type=float)
    g.add_argument("--similarity", choices=("cosine", "dot"))
    g.add_argument("--alpha", type=float)
    g.add_argument("--shrinkage", type=float)
    g.add_argument("--neighbours", type=int)
    g.add_argument("--min-rating", dest="min_rating", type=float)
    g.add_argument("--popularity-damping", dest="popularity_damping", type=float)
    g.add_argument("--recency-half-life", dest="recency_half_life", type=float)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recommender", description="Marquee recommender: offline tools"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def model_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model-dir",
            default=_default_model_dir(),
            help="model registry directory (env MARQUEE_MODEL_DIR, else var/models)",
        )

    p = sub.add_parser("train", help="evaluate, fit on all ratings, register and publish")
    p.add_argument("--ratings", default=DEFAULT_RATINGS, help="ratings.csv or ratings.dat")
    model_dir(p)
    p.add_argument("--no-publish", action="store_true", help="register without publishing")
    p.add_argument("--no-evaluate", action="store_true", help="skip the hold-out evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_param_overrides(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="ours vs popularity vs reference BM25 item-kNN")
    p.add_argument("--ratings", default=DEFAULT_RATINGS)
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON ('-' = stdout)")
    p.add_argument("--ease", action="store_true", help="also measure EASE (dense; small catalogs)")
    _add_param_overrides(p)
    p.set_defaults(func=cmd_evaluate)

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
    p.add_argument("--users", required=True, help="CSV of user_id,movie_id history rows")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc.filename or exc}: no such file", file=sys.stderr)
        return 2
    except (IntegrityError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
