"""Offline evaluation on chronological per-user hold-outs, against tuned peers.

Protocols (``holdout_split``), the same for every model so the numbers compare:

* positives are ratings >= 4; users with at least 5 positives are evaluated;
* the last 20 % (ceil) of each evaluated user's positives, by timestamp, are the test set;
* ``standard``: the model is trained on every other rating (the usual protocol in papers);
* ``strict`` (the project's own): the user's ratings made after their first held-out positive
  are hidden too, so nothing from the test period leaks in;
* each model recommends 20 movies per evaluated user; a movie the user rated in training is
  never recommended. Recall@K = hits / |test|; NDCG@K with binary relevance, ideal DCG over
  min(K, |test|); HitRate@10; Coverage@10 = distinct movies in anyone's top 10 / catalog.

Hyper-parameters are never chosen on the test split: ``validation_split`` cuts a validation
split from the training rows the same way, every peer's grid is scored there (by the mean of
Recall@20 and NDCG@20), and the winner is refit on the training rows and scored once on test.
Peers (``PEERS``): popularity, our kNN alone, EASE over a wide lambda grid, and - when the
``bench`` extra is installed - implicit's ALS and BM25 item-kNN.

Two more measurements: cold users (``cold_users``: evaluated users whose history is cut to
their first 1 / 3 ratings / first third) and cold movies (``cold_items``: well-rated movies
whose ratings are hidden, content neighbours vs their collaborative neighbours).

Scoring never builds a users x items matrix: users are scored in blocks (``top_items`` for our
model, 256 users x items for EASE).
"""

from __future__ import annotations

import csv
import itertools
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recommender import ease as ease_mod
from recommender.data import Catalog, Interactions, chronological_order
from recommender.model import ModelParams, SimilarityModel, fit

KS = (10, 20)
K = max(KS)
PROTOCOLS = ("standard", "strict")
EASE_L2 = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


# ---- splits ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """Training interactions plus, for each evaluated user, the held-out test movies."""

    train: Interactions
    users: np.ndarray  # (n_eval,) external user ids, sorted
    test_indptr: np.ndarray  # (n_eval + 1,)
    test_items: np.ndarray  # external movie ids
    protocol: str = "strict"
    test_ratings: np.ndarray | None = None  # of each held-out positive (for write_holdout)
    test_timestamps: np.ndarray | None = None

    def describe(self) -> dict:
        return {
            "protocol": self.protocol,
            "train_rows": len(self.train),
            "eval_users": int(len(self.users)),
            "test_items": int(len(self.test_items)),
        }


def holdout_split(
    interactions: Interactions,
    protocol: str = "strict",
    *,
    positive_threshold: float = 4.0,
    min_positives: int = 5,
    test_fraction: float = 0.2,
    max_users: int | None = None,
    seed: int = 0,
) -> Split:
    """Hold out each eligible user's most recent positives (see the module docstring).

    ``max_users`` evaluates a random sample of the eligible users (the others keep their whole
    history in training): evaluation at scale costs in proportion to the sample, not the data.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    n = len(interactions)
    order = chronological_order(
        interactions.user_ids, interactions.timestamps, interactions.item_ids
    )
    users = interactions.user_ids[order]
    stamps = interactions.timestamps[order]
    positive = interactions.ratings[order] >= positive_threshold

    pos_rows = np.flatnonzero(positive)
    pos_users = users[pos_rows]
    uniq, start_idx, counts = np.unique(pos_users, return_index=True, return_counts=True)
    eligible = counts >= min_positives
    if max_users is not None and eligible.sum() > max_users:
        chosen = np.random.default_rng(seed).choice(
            np.flatnonzero(eligible), size=max_users, replace=False
        )
        eligible = np.zeros_like(eligible)
        eligible[chosen] = True
    n_test = np.ceil(counts * test_fraction).astype(np.int64)
    group = np.repeat(np.arange(len(uniq)), counts)
    pos_in_user = np.arange(len(pos_rows)) - start_idx[group]
    from_end = counts[group] - 1 - pos_in_user
    is_test_pos = eligible[group] & (from_end < n_test[group])
    first_test = pos_rows[is_test_pos & (from_end == n_test[group] - 1)]
    del group, pos_in_user, from_end

    test_sorted = np.zeros(n, dtype=bool)
    test_sorted[pos_rows[is_test_pos]] = True
    keep_sorted = ~test_sorted
    if protocol == "strict":
        # cutoff per eligible user: the timestamp of their first held-out positive
        cutoff = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
        cutoff[np.searchsorted(uniq, users[first_test])] = stamps[first_test]
        user_pos = np.searchsorted(uniq, users)
        user_pos_c = np.minimum(user_pos, max(len(uniq) - 1, 0))
        has_cutoff = (user_pos < len(uniq)) & (uniq[user_pos_c] == users)
        user_cutoff = np.where(has_cutoff, cutoff[user_pos_c], np.iinfo(np.int64).max)
        keep_sorted &= stamps <= user_cutoff
        del user_pos, user_pos_c, has_cutoff, user_cutoff

    train = interactions.subset(order[keep_sorted])
    test_rows = order[test_sorted]  # grouped by user, chronological
    eval_users, test_counts = np.unique(interactions.user_ids[test_rows], return_counts=True)
    indptr = np.zeros(len(eval_users) + 1, dtype=np.int64)
    np.cumsum(test_counts, out=indptr[1:])
    return Split(
        train=train,
        users=eval_users,
        test_indptr=indptr,
        test_items=interactions.item_ids[test_rows],
        protocol=protocol,
        test_ratings=interactions.ratings[test_rows],
        test_timestamps=interactions.timestamps[test_rows],
    )


def validation_split(split: Split, **kwargs: object) -> Split:
    """A validation split cut from ``split.train`` the same way the test split was cut."""
    return holdout_split(split.train, split.protocol, **kwargs)  # type: ignore[arg-type]


# ---- metrics -----------------------------------------------------------------------------------
def ranking_metrics(split: Split, recs: np.ndarray, n_catalog: int) -> dict[str, float]:
    """Metrics for ``recs`` (n_eval x >=20 external movie ids, -1 = no item)."""
    n_eval = len(split.users)
    counts = np.diff(split.test_indptr)
    row_of_test = np.repeat(np.arange(n_eval), counts)
    big = np.int64(1) << 32
    test_keys = row_of_test.astype(np.int64) * big + split.test_items
    rec_keys = np.arange(n_eval, dtype=np.int64)[:, None] * big + recs
    hits = np.isin(rec_keys, test_keys) & (recs >= 0)
    discounts = 1.0 / np.log2(np.arange(2, recs.shape[1] + 2))
    out: dict[str, float] = {}
    for k in KS:
        h = hits[:, :k]
        out[f"recall@{k}"] = float(np.mean(h.sum(axis=1) / counts))
        dcg = (h * discounts[:k]).sum(axis=1)
        ideal = np.cumsum(discounts[:k])[np.minimum(counts, k) - 1]
        out[f"ndcg@{k}"] = float(np.mean(dcg / ideal))
    out["hitrate@10"] = float(np.mean(hits[:, :10].any(axis=1)))
    top10 = recs[:, :10]
    out["coverage@10"] = float(len(np.unique(top10[top10 >= 0])) / max(n_catalog, 1))
    return out


def objective(metrics: dict[str, float]) -> float:
    """What validation maximises: the mean of Recall@20 and NDCG@20."""
    return (metrics["recall@20"] + metrics["ndcg@20"]) / 2


# ---- the users' training histories ---------------------------------------------------------------
@dataclass(frozen=True)
class Histories:
    """Evaluated users' training rows, chronological per user (external ids)."""

    indptr: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray


def histories_of(train: Interactions, users: np.ndarray) -> Histories:
    mine = np.isin(train.user_ids, users)
    sub = train.subset(mine)
    order = np.lexsort((sub.item_ids, sub.timestamps, sub.user_ids))
    sub = sub.subset(order)
    rows = np.searchsorted(users, sub.user_ids)
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(users)), out=indptr[1:])
    return Histories(indptr, sub.item_ids, sub.ratings, sub.timestamps)


def _seen_matrix(train: Interactions, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
    """users x items (indices into ``items``) of what each user rated in training."""
    h = histories_of(train, users)
    cols = np.searchsorted(items, h.items)
    rows = np.repeat(np.arange(len(users)), np.diff(h.indptr))
    m = sp.csr_matrix(
        (np.ones(len(cols), np.float32), (rows, cols)), shape=(len(users), len(items))
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _top_k_dense(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


# ---- peers -------------------------------------------------------------------------------------
Recommend = Callable[[Split, int], np.ndarray]  # -> (n_eval, k) external ids, -1 padded


@dataclass
class Peer:
    """A model family: a grid of fit parameters (each with scoring-time variants) and a fit."""

    name: str
    grid: list[tuple[dict, list[dict]]]  # [(fit params, [scoring params, ...]), ...]
    fit: Callable[[Interactions, dict], Callable[[dict], Recommend]]
    describe: Callable[[dict], str] = field(
        default=lambda p: ", ".join(f"{k}={v}" for k, v in p.items())
    )


def popularity_peer() -> Peer:
    def fit_(train: Interactions, _: dict) -> Callable[[dict], Recommend]:
        items, counts = np.unique(train.item_ids, return_counts=True)
        ranked = items[np.lexsort((items, -counts))]

        def recommend(split: Split, k: int) -> np.ndarray:
            h = histories_of(split.train, split.users)
            out = np.full((len(split.users), k), -1, dtype=np.int64)
            for row in range(len(split.users)):
                seen = h.items[h.indptr[row] : h.indptr[row + 1]]
                head = ranked[: k + len(seen)]
                picked = head[~np.isin(head, seen)][:k]
                out[row, : len(picked)] = picked
            return out

        return lambda _scoring: recommend

    return Peer("popularity", [({}, [{}])], fit_, describe=lambda p: "-")


def ours_peer(
    name: str,
    fit_grid: Sequence[dict],
    scoring_grid: Sequence[dict],
    base: ModelParams,
    catalog: Catalog | None = None,
) -> Peer:
    """Our served model, scored through ``SimilarityModel.top_items`` (the served path)."""

    def fit_(train: Interactions, fit_params: dict) -> Callable[[dict], Recommend]:
        model = fit(train, replace(base, **fit_params), catalog)

        def variant(scoring: dict) -> Recommend:
            scored = replace(model, params=replace(model.params, **scoring))
            return lambda split, k: recommend_with_model(scored, split, k)

        variant.model = model  # type: ignore[attr-defined]
        return variant

    return Peer(name, [(dict(f), [dict(s) for s in scoring_grid]) for f in fit_grid], fit_)


def recommend_with_model(model: SimilarityModel, split: Split, k: int) -> np.ndarray:
    """Each evaluated user's top ``k`` from their stored history (``recommend_user``)."""
    rows = np.searchsorted(model.user_ids, split.users)
    rows_c = np.minimum(rows, max(model.n_users - 1, 0))
    known = (rows < model.n_users) & (model.user_ids[rows_c] == split.users)
    starts = np.where(known, model.user_indptr[rows_c], 0)
    stops = np.where(known, model.user_indptr[rows_c + 1], 0)
    lengths = stops - starts
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    take = np.repeat(starts - indptr[:-1], lengths) + np.arange(int(indptr[-1]))
    items = np.asarray(model.user_items)[take]
    liked = np.asarray(model.user_liked)[take]
    top, _ = model.top_items(indptr, items, liked, k)
    return np.where(top >= 0, model.item_ids[np.maximum(top, 0)], -1)


def ease_peer(l2_grid: Sequence[float] = EASE_L2) -> Peer:
    """Dense EASE over every movie, every rated movie as input (binary)."""

    def fit_(train: Interactions, params: dict) -> Callable[[dict], Recommend]:
        items, item_idx = np.unique(train.item_ids, return_inverse=True)
        users, user_idx = np.unique(train.user_ids, return_inverse=True)
        x = sp.csr_matrix(
            (np.ones(len(item_idx), np.float32), (user_idx, item_idx)),
            shape=(len(users), len(items)),
        )
        x.data[:] = 1.0
        b = ease_mod.weights(x, params["l2"])

        def recommend(split: Split, k: int) -> np.ndarray:
            seen = _seen_matrix(split.train, split.users, items)
            out = np.empty((len(split.users), k), dtype=np.int64)
            for start in range(0, len(split.users), 256):
                rows = seen[start : start + 256]
                scores = np.asarray(rows @ b)
                r, c = rows.nonzero()
                scores[r, c] = -np.inf
                out[start : start + 256] = items[_top_k_dense(scores, k)]
            return out

        return lambda _scoring: recommend

    return Peer("EASE", [({"l2": float(v)}, [{}]) for v in l2_grid], fit_)


def implicit_peers(quick: bool = False) -> list[Peer]:
    """implicit's ALS and BM25 item-kNN (the ``bench`` extra); none if it is not installed."""
    try:
        import implicit  # noqa: F401
    except ImportError:
        return []

    def user_items(train: Interactions) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        items, item_idx = np.unique(train.item_ids, return_inverse=True)
        users, user_idx = np.unique(train.user_ids, return_inverse=True)
        x = sp.csr_matrix(
            (np.ones(len(item_idx), np.float32), (user_idx, item_idx)),
            shape=(len(users), len(items)),
        )
        x.sum_duplicates()
        x.data[:] = 1.0
        return x, users, items

    def make(build: Callable[[dict], object]):
        def fit_(train: Interactions, params: dict) -> Callable[[dict], Recommend]:
            from threadpoolctl import threadpool_limits

            x, users, items = user_items(train)
            with threadpool_limits(1, "blas"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # implicit's "converting coo to csr" notes
                model = build(params)
                confidence = (x * np.float32(params.get("alpha", 1.0))).tocsr()
                model.fit(confidence, show_progress=False)  # type: ignore[attr-defined]

            def recommend(split: Split, k: int) -> np.ndarray:
                rows = np.searchsorted(users, split.users)
                ids, _ = model.recommend(  # type: ignore[attr-defined]
                    rows, x[rows].tocsr(), N=k, filter_already_liked_items=True
                )
                ids = np.asarray(ids)
                return np.where(ids >= 0, items[np.clip(ids, 0, len(items) - 1)], -1)

            return lambda _scoring: recommend

        return fit_

    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender

    def als(p: dict) -> object:
        return AlternatingLeastSquares(
            factors=p["factors"],
            regularization=p["regularization"],
            alpha=1.0,
            iterations=15,
            random_state=0,
            num_threads=2,
        )

    def bm25(p: dict) -> object:
        return BM25Recommender(K=p["K"], K1=p["K1"], B=p["B"], num_threads=2)

    als_grid = {
        "factors": (32, 64, 128) if not quick else (32,),
        "regularization": (0.01, 0.1, 1.0) if not quick else (0.1,),
        "alpha": (1.0, 10.0) if not quick else (5.0,),
    }
    bm25_grid = {
        "K": (50, 200, 800) if not quick else (200,),
        "K1": (1.2, 3.0, 100.0) if not quick else (1.2,),
        "B": (0.2, 0.5, 0.8) if not quick else (0.5,),
    }
    return [
        Peer("implicit ALS", [(p, [{}]) for p in _product(als_grid)], make(als)),
        Peer("implicit BM25 item-kNN", [(p, [{}]) for p in _product(bm25_grid)], make(bm25)),
    ]


def _product(grid: Mapping[str, Sequence]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


# ---- the tuned comparison ------------------------------------------------------------------------
OURS_FIT_GRID = _product({"ease_l2": (100.0, 200.0, 400.0, 800.0), "ease_min_users": (3, 10)})
OURS_SCORING_GRID = _product(
    {
        "knn_weight": (0.2, 0.4, 0.7),
        "recency_half_life": (0.0, 3.0, 10.0),
        "popularity_weight": (0.0, 1.0, 3.0, 10.0),
    }
)
KNN_FIT_GRID = _product({"neighbours": (50, 100), "min_rating": (3.5, 0.0)})
KNN_SCORING_GRID = _product({"recency_half_life": (0.0, 3.0, 10.0)})


def default_peers(
    base: ModelParams = ModelParams(),  # noqa: B008 - frozen dataclass
    *,
    quick: bool = False,
    with_implicit: bool = True,
) -> list[Peer]:
    """The tuned peer table: ours (served), popularity, our kNN, EASE, implicit ALS / BM25.

    Our model is fitted without the movies' metadata here: content rows only serve movies
    nobody rated, which no training history holds, so user scores are the same without it.
    """
    fit_grid = OURS_FIT_GRID if not quick else [{}]
    scoring_grid = OURS_SCORING_GRID if not quick else [{}]
    knn_base = replace(base, algorithm="knn")
    peers = [
        ours_peer("Marquee EASE + kNN, tuned on validation", fit_grid, scoring_grid, base),
        ours_peer("Marquee EASE + kNN, served defaults", [{}], [{}], base),
        popularity_peer(),
        ours_peer(
            "Marquee kNN alone",
            KNN_FIT_GRID if not quick else [{}],
            KNN_SCORING_GRID if not quick else [{}],
            knn_base,
        ),
        ease_peer(EASE_L2 if not quick else (100.0, 1000.0)),
    ]
    if with_implicit:
        peers += implicit_peers(quick)
    return peers


def tune_and_test(
    split: Split,
    peers: Sequence[Peer],
    *,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """For each peer: every grid point on validation, the best refit on train, scored on test."""
    val = validation_split(split)
    results: dict[str, dict] = {}
    for peer in peers:
        best: tuple[float, dict, dict, dict] | None = None
        tried = 0
        started = time.perf_counter()
        for fit_params, scorings in peer.grid:
            if len(peer.grid) == 1 and len(scorings) == 1:
                best = (0.0, fit_params, scorings[0], {})
                break
            variants = peer.fit(val.train, fit_params)
            for scoring in scorings:
                metrics = ranking_metrics(val, variants(scoring)(val, K), _n_items(val.train))
                tried += 1
                if best is None or objective(metrics) > best[0]:
                    best = (objective(metrics), fit_params, scoring, metrics)
        assert best is not None
        tuning_s = time.perf_counter() - started
        _, fit_params, scoring, val_metrics = best
        t0 = time.perf_counter()
        variants = peer.fit(split.train, fit_params)
        fit_s = time.perf_counter() - t0
        recs = variants(scoring)(split, K)
        test = ranking_metrics(split, recs, _n_items(split.train))
        chosen = {**fit_params, **scoring}
        results[peer.name] = {
            "params": chosen,
            "params_text": peer.describe(chosen) if chosen else "-",
            "grid_points": tried or 1,
            "validation": val_metrics,
            "test": test,
            "fit_seconds": round(fit_s, 3),
            "tuning_seconds": round(tuning_s, 1),
        }
        log(
            f"  {split.protocol:8} {peer.name:32} R@20 {test['recall@20']:.4f} "
            f"N@20 {test['ndcg@20']:.4f}  fit {fit_s:.1f}s  ({tried} grid points, "
            f"{chosen or 'no parameters'})"
        )
    return {"split": split.describe(), "validation_split": val.describe(), "models": results}


def _n_items(train: Interactions) -> int:
    return int(len(np.unique(train.item_ids)))


# ---- what pruning EASE costs ---------------------------------------------------------------------
PRUNE_SIZES = (50, 100, 200, 500, 1_000_000)  # the last keeps every weight: the dense EASE


def pruning_cost(split: Split, params: ModelParams, sizes: Sequence[int] = PRUNE_SIZES) -> dict:
    """The served model with EASE cut to each movie's top-N weights (by magnitude), on the
    validation and the test split: what the memory-mappable table costs against dense EASE."""
    val = validation_split(split)
    out: dict[str, dict] = {}
    for n in sizes:
        row: dict[str, float | dict] = {}
        for name, part in (("validation", val), ("test", split)):
            model = fit(part.train, replace(params, ease_neighbours=n))
            metrics = ranking_metrics(part, recommend_with_model(model, part, K), model.n_items)
            row[name] = {m: metrics[m] for m in ("recall@20", "ndcg@20")}
            if name == "test":
                row["table_mb"] = round(model.ease.nbytes / 2**20, 2) if model.ease else 0.0
        out["all" if n >= 1_000_000 else str(n)] = row
    return out


# ---- cold users --------------------------------------------------------------------------------
COLD_HISTORIES = (("1 movie", 1), ("3 movies", 3), ("first third", -3))


def cold_users(
    split: Split,
    params: ModelParams,
    ease_l2: float,
    *,
    seed: int = 0,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """Recommendations from short histories: half of the evaluated users (random) keep only
    the first 1 / 3 movies / first third of their training ratings, in training and as their
    history; scored on their usual test positives. The other half keep their whole history."""
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(split.users, size=len(split.users) // 2, replace=False))
    rows = np.searchsorted(split.users, cold)
    counts = np.diff(split.test_indptr)[rows]
    test_indptr = np.zeros(len(cold) + 1, dtype=np.int64)
    np.cumsum(counts, out=test_indptr[1:])
    test_rows = np.concatenate(
        [np.arange(split.test_indptr[r], split.test_indptr[r + 1]) for r in rows]
    )
    test_items = split.test_items[test_rows]
    train = split.train
    order = np.lexsort((train.item_ids, train.timestamps, train.user_ids))
    sorted_users = train.user_ids[order]
    is_cold = np.isin(sorted_users, cold)
    starts = np.searchsorted(sorted_users, sorted_users, side="left")
    position = np.arange(len(order)) - starts
    totals = np.searchsorted(sorted_users, sorted_users, side="right") - starts
    out: dict[str, dict] = {}
    peers = [
        ours_peer("Marquee (served)", [{}], [{}], params),
        popularity_peer(),
        ease_peer((ease_l2,)),
    ]
    for label, keep in COLD_HISTORIES:
        limit = np.maximum(np.ceil(totals / 3), 1) if keep < 0 else np.full(len(order), keep)
        kept = ~is_cold | (position < limit)
        cold_split = Split(train.subset(np.sort(order[kept])), cold, test_indptr, test_items)
        lengths = np.bincount(
            np.searchsorted(cold, sorted_users[kept & is_cold]), minlength=len(cold)
        )
        row: dict[str, dict | float] = {"history_movies_median": float(np.median(lengths))}
        for peer in peers:
            fit_params, scorings = peer.grid[0]
            recs = peer.fit(cold_split.train, fit_params)(scorings[0])(cold_split, K)
            row[peer.name] = ranking_metrics(cold_split, recs, _n_items(cold_split.train))
        out[label] = row
        log(
            f"  cold users, {label}: "
            + ", ".join(
                f"{name} R@20 {m['recall@20']:.4f}"
                for name, m in row.items()
                if isinstance(m, dict)
            )
        )
    return {"users": int(len(cold)), "protocol": split.protocol, "histories": out}


# ---- cold movies -------------------------------------------------------------------------------
def cold_items(
    interactions: Interactions,
    catalog: Catalog,
    params: ModelParams,
    *,
    min_likes: int = 20,
    fraction: float = 0.1,
    seeds: Sequence[int] = (1, 2, 3),
    keep_likes: Sequence[int] = (1, 3, 5, 10),
    k: int = 10,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """How well movies without (enough) ratings get similar lists.

    For a random ``fraction`` of the well-rated movies (>= ``min_likes`` likes) all ratings are
    hidden; the model is refit and their similar lists (now content-based) are compared with
    their collaborative lists from the full data: overlap@k. The fallback to beat: the most
    popular movies sharing the most genres (Jaccard). Then each keeps ``keep_likes`` random
    likes, so the lists are blends. Averaged over ``seeds``.
    """
    knn_params = replace(params, algorithm="knn")
    full = fit(interactions, knn_params)  # the truth: collaborative lists from every rating
    liked = ~(interactions.ratings < params.min_rating)
    well = full.item_ids[full.item_likes >= min_likes]
    genres = {int(m): set(g) for m, g in zip(catalog.movie_ids, catalog.genres, strict=True)}
    rows: dict[str, list[float]] = {"content": [], "genre-popularity fallback": []}
    for m in keep_likes:
        rows[f"blend, {m} like{'s' if m > 1 else ''} kept"] = []
        rows[f"collaborative only, {m} like{'s' if m > 1 else ''} kept"] = []
    sources: dict[str, str] = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        hidden = np.sort(rng.choice(well, size=max(1, int(len(well) * fraction)), replace=False))
        truth = {int(h): {m for m, _ in full.similar(int(h), k)} for h in hidden}
        hide = np.isin(interactions.item_ids, hidden)
        cold = fit(interactions.subset(~hide), knn_params, catalog)
        rows["content"].append(_overlap(cold, truth, k))
        sources["content"] = cold.similar_source_of(int(hidden[0]))
        popularity = dict(zip(cold.item_ids.tolist(), cold.item_popularity.tolist(), strict=True))
        rows["genre-popularity fallback"].append(
            float(
                np.mean(
                    [len(truth[h] & _genre_popular(h, genres, popularity, k)) / k for h in truth]
                )
            )
        )
        hidden_likes = np.flatnonzero(hide & liked)
        for m in keep_likes:
            keep = np.zeros(len(interactions), dtype=bool)
            for h in hidden:
                own = hidden_likes[interactions.item_ids[hidden_likes] == h]
                keep[rng.choice(own, size=min(m, len(own)), replace=False)] = True
            part = interactions.subset(~hide | keep)
            suffix = f"{m} like{'s' if m > 1 else ''} kept"
            blended = fit(part, knn_params, catalog)
            rows[f"blend, {suffix}"].append(_overlap(blended, truth, k))
            sources[f"blend, {suffix}"] = blended.similar_source_of(int(hidden[0]))
            collaborative = fit(part, knn_params)  # no catalog: the kNN lists alone
            rows[f"collaborative only, {suffix}"].append(_overlap(collaborative, truth, k))
        log(f"  cold movies, seed {seed}: content overlap@{k} {rows['content'][-1]:.3f}")
    return {
        "well_rated_movies": int(len(well)),
        "hidden_per_draw": max(1, int(len(well) * fraction)),
        "min_likes": min_likes,
        "draws": len(seeds),
        "k": k,
        f"overlap@{k}": {name: float(np.mean(v)) for name, v in rows.items()},
        "sources": sources,
    }


def _overlap(model: SimilarityModel, truth: dict[int, set[int]], k: int) -> float:
    return float(np.mean([len(truth[h] & {m for m, _ in model.similar(h, k)}) / k for h in truth]))


def _genre_popular(
    movie: int, genres: dict[int, set[str]], popularity: dict[int, int], k: int
) -> set[int]:
    mine = genres.get(movie, set())
    scored = [
        (len(mine & g) / max(len(mine | g), 1), popularity.get(other, 0), -other)
        for other, g in genres.items()
        if other != movie
    ]
    scored.sort(reverse=True)
    return {-s[2] for s in scored[:k]}


# ---- the whole run -----------------------------------------------------------------------------
def evaluate(
    interactions: Interactions,
    params: ModelParams = ModelParams(),  # noqa: B008 - frozen dataclass
    catalog: Catalog | None = None,
    *,
    protocols: Sequence[str] = PROTOCOLS,
    quick: bool = False,
    with_implicit: bool = True,
    with_cold: bool = True,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """The tuned peer table on each protocol, plus the cold-user and cold-movie figures."""
    out: dict = {"params": params.to_dict(), "protocols": {}}
    for protocol in protocols:
        split = holdout_split(interactions, protocol)
        log(f"{protocol}: {split.describe()}")
        peers = default_peers(params, quick=quick, with_implicit=with_implicit)
        out["protocols"][protocol] = tune_and_test(split, peers, log=log)
        if not quick:
            out.setdefault("pruning", {})[protocol] = pruning_cost(split, params)
            log(f"  {protocol}: pruning {out['pruning'][protocol]}")
    if with_cold:
        strict = holdout_split(interactions, "strict")
        models = out["protocols"].get("strict", next(iter(out["protocols"].values())))["models"]
        l2 = models["EASE"]["params"].get("l2", 300.0)
        out["cold_users"] = cold_users(strict, params, l2, log=log)
        if catalog is not None:
            out["cold_items"] = cold_items(interactions, catalog, params, log=log)
    return out


def evaluate_sample(
    interactions: Interactions,
    params: ModelParams,
    catalog: Catalog | None = None,
    *,
    max_users: int = 2000,
    seed: int = 0,
) -> dict:
    """What ``train`` runs: the strict protocol on a sample of users, ours vs popularity.

    Memory: one training copy of the interactions plus one fit; scoring is per block of users.
    """
    split = holdout_split(interactions, "strict", max_users=max_users, seed=seed)
    t0 = time.perf_counter()
    model = fit(split.train, params, catalog)
    fit_s = time.perf_counter() - t0
    ours = ranking_metrics(split, recommend_with_model(model, split, K), model.n_items)
    ours["fit_seconds"] = round(fit_s, 3)
    del model
    pop = popularity_peer()
    popularity = ranking_metrics(
        split, pop.fit(split.train, {})({})(split, K), _n_items(split.train)
    )
    return {"split": split.describe(), "models": {"ours": ours, "popularity": popularity}}


# ---- reporting ---------------------------------------------------------------------------------
def format_tables(results: dict) -> str:
    """Markdown: one table per protocol, then the cold-user and cold-movie figures."""
    parts: list[str] = []
    for protocol, run in results.get("protocols", {}).items():
        split = run["split"]
        models = run["models"]
        ease = models.get("EASE", {}).get("test")
        parts.append(
            f"### {protocol} protocol: {split['eval_users']} users, {split['test_items']} "
            f"test positives, {split['train_rows']:,} training rows"
        )
        parts.append("")
        parts.append(
            "| model | chosen on validation | Recall@20 | NDCG@20 | Recall@10 | NDCG@10 | "
            "vs EASE R@20 / N@20 | fit s |"
        )
        parts.append("|---|---|---|---|---|---|---|---|")
        for name, m in models.items():
            t = m["test"]
            ratio = (
                f"{t['recall@20'] / ease['recall@20']:.3f} / {t['ndcg@20'] / ease['ndcg@20']:.3f}"
                if ease
                else "-"
            )
            parts.append(
                f"| {name} | {m['params_text']} | {t['recall@20']:.4f} | {t['ndcg@20']:.4f} | "
                f"{t['recall@10']:.4f} | {t['ndcg@10']:.4f} | {ratio} | {m['fit_seconds']:.2f} |"
            )
        parts.append("")
    pruning = results.get("pruning")
    if pruning:
        parts.append(
            "### pruning EASE to each movie's top-N weights (served defaults otherwise): "
            "Recall@20 / NDCG@20"
        )
        parts.append("")
        parts.append(
            "| N | " + " | ".join(f"{p} validation | {p} test" for p in pruning) + " | table MB |"
        )
        parts.append("|---|" + "---|---|" * len(pruning) + "---|")
        sizes = list(next(iter(pruning.values())))
        for n in sizes:
            cells = []
            for runs in pruning.values():
                for name in ("validation", "test"):
                    m = runs[n][name]
                    cells.append(f"{m['recall@20']:.4f} / {m['ndcg@20']:.4f}")
            mb = next(iter(pruning.values()))[n]["table_mb"]
            parts.append(f"| {n} | " + " | ".join(cells) + f" | {mb:.1f} |")
        parts.append("")
    cold = results.get("cold_users")
    if cold:
        parts.append(
            f"### cold users ({cold['protocol']} protocol, {cold['users']} users, "
            "history cut short in training and as input): Recall@20 / NDCG@20"
        )
        parts.append("")
        names = [n for n in next(iter(cold["histories"].values())) if n != "history_movies_median"]
        parts.append("| history | " + " | ".join(names) + " |")
        parts.append("|---|" + "---|" * len(names))
        for label, row in cold["histories"].items():
            cells = [f"{row[n]['recall@20']:.4f} / {row[n]['ndcg@20']:.4f}" for n in names]
            parts.append(
                f"| {label} (median {row['history_movies_median']:g}) | " + " | ".join(cells) + " |"
            )
        parts.append("")
    items = results.get("cold_items")
    if items:
        k = items["k"]
        parts.append(
            f"### cold movies: {items['hidden_per_draw']} of {items['well_rated_movies']} movies "
            f"with >= {items['min_likes']} likes hidden, {items['draws']} draws; overlap@{k} "
            "with their collaborative lists on all data"
        )
        parts.append("")
        parts.append(f"| similar list | overlap@{k} |")
        parts.append("|---|---|")
        for name, value in items[f"overlap@{k}"].items():
            parts.append(f"| {name} | {value:.3f} |")
        parts.append("")
    return "\n".join(parts)


# ---- the hold-out as a file ----------------------------------------------------------------------
HOLDOUT_HEADER = ("user_id", "movie_id", "rating", "timestamp", "part")


def write_holdout(split: Split, path: str | Path) -> int:
    """The evaluated users as CSV (``HOLDOUT_HEADER``): their training rows (``part=history``,
    chronological) then their held-out positives (``part=heldout``). The history rows of a user
    are what a model may see of them; ``predict --users`` reads this file as it is (extra
    columns are ignored, so filter on ``part`` first). Returns the number of rows written."""
    if split.test_ratings is None or split.test_timestamps is None:
        raise ValueError("this split does not carry the held-out ratings and timestamps")
    h = histories_of(split.train, split.users)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HOLDOUT_HEADER)
        for row, user in enumerate(split.users.tolist()):
            parts = (
                ("history", h.items, h.ratings, h.timestamps, h.indptr),
                (
                    "heldout",
                    split.test_items,
                    split.test_ratings,
                    split.test_timestamps,
                    split.test_indptr,
                ),
            )
            for part, items, ratings, stamps, indptr in parts:
                for j in range(int(indptr[row]), int(indptr[row + 1])):
                    writer.writerow(
                        [user, int(items[j]), f"{float(ratings[j]):g}", int(stamps[j]), part]
                    )
                    n += 1
    return n


TRAINING_HEADER = ("userId", "movieId", "rating", "timestamp")  # MovieLens's, for ``train``


def write_training(split: Split, path: str | Path) -> int:
    """The split's training rows as a MovieLens ratings CSV (``train --ratings`` reads it): what
    a model may learn from. No held-out positive is in it, and with the strict protocol no
    rating an evaluated user made after their first held-out one (``holdout_split``). Rows in
    the split's order (by user, then time); returns the number written."""
    train = split.train
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TRAINING_HEADER)
        for user, item, rating, stamp in zip(
            train.user_ids.tolist(),
            train.item_ids.tolist(),
            train.ratings.tolist(),
            train.timestamps.tolist(),
            strict=True,
        ):
            writer.writerow((user, item, f"{rating:g}", stamp))
    tmp.replace(path)
    return len(train)
