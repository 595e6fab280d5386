"""Offline evaluation on a chronological per-user hold-out.

Protocol (the same for every model, so the numbers are comparable):

* positives are ratings >= 4; users with at least 5 positives are evaluated;
* the last 20% (ceil) of each evaluated user's positives, by timestamp, are held out as test;
* that user's ratings made after the first held-out positive are hidden too (no peeking at the
  future); everything else - every other user's full history - is the training data;
* each model recommends 20 movies per evaluated user from their training history, never
  re-recommending a movie the user already rated in training.

Metrics: Recall@K = hits / |test|, NDCG@K (binary relevance, ideal DCG over min(K, |test|)),
HitRate@10 (share of users with at least one hit), and catalog coverage@10 (distinct movies
recommended in the top 10 over all users / movies in the training catalog).

Baselines: popularity (most rated in training, minus what the user has seen) and a reference
item-kNN in the style of ``implicit.nearest_neighbours.BM25Recommender`` (BM25 K1=100, B=0.8,
raw dot-product similarity, no shrinkage, K tuned on this protocol).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from recommender.data import Interactions
from recommender.model import ModelParams, fit, history_matrix

# BM25 item-kNN as in benfred/implicit's BM25Recommender: BM25-weighted item rows, raw
# dot-product similarity, top-K neighbours, user score = sum of the history's neighbour scores.
# Tuned on this protocol over K1 {1.2, 3, 100} x B {0.1, 0.2, 0.3, 0.5} x K {50..800}.
REFERENCE_PARAMS = ModelParams(
    weighting="bm25",
    bm25_k1=1.2,
    bm25_b=0.2,
    similarity="dot",
    shrinkage=0.0,
    neighbours=800,
    min_rating=0.0,
    popularity_damping=0.0,
    recency_half_life=0.0,
)
# the same with implicit's bm25_weight defaults (K1=100, B=0.8) - far worse on MovieLens
IMPLICIT_DEFAULT_PARAMS = replace(REFERENCE_PARAMS, bm25_k1=100.0, bm25_b=0.8, neighbours=100)
KS = (10, 20)


@dataclass(frozen=True)
class Split:
    """Training interactions plus, for each evaluated user, the held-out test movies."""

    train: Interactions
    users: np.ndarray  # (n_eval,) external user ids, sorted
    test_indptr: np.ndarray  # (n_eval + 1,)
    test_items: np.ndarray  # external movie ids


def chronological_split(
    interactions: Interactions,
    positive_threshold: float = 4.0,
    min_positives: int = 5,
    test_fraction: float = 0.2,
) -> Split:
    """Hold out each eligible user's most recent positives (see module docstring)."""
    n = len(interactions)
    order = np.lexsort((interactions.item_ids, interactions.timestamps, interactions.user_ids))
    users = interactions.user_ids[order]
    stamps = interactions.timestamps[order]
    positive = interactions.ratings[order] >= positive_threshold

    pos_rows = np.flatnonzero(positive)
    pos_users = users[pos_rows]
    uniq, start_idx, counts = np.unique(pos_users, return_index=True, return_counts=True)
    eligible = counts >= min_positives
    n_test = np.ceil(counts * test_fraction).astype(np.int64)
    # position of each positive within its user (0 = oldest) and from the end
    group = np.repeat(np.arange(len(uniq)), counts)
    pos_in_user = np.arange(len(pos_rows)) - start_idx[group]
    from_end = counts[group] - 1 - pos_in_user
    is_test_pos = eligible[group] & (from_end < n_test[group])

    test_sorted = np.zeros(n, dtype=bool)
    test_sorted[pos_rows[is_test_pos]] = True
    # cutoff per eligible user: timestamp of the first held-out positive
    cutoff = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
    first_test = pos_rows[is_test_pos & (from_end == n_test[group] - 1)]
    cutoff[np.searchsorted(uniq, users[first_test])] = stamps[first_test]
    user_pos = np.searchsorted(uniq, users)
    user_pos_c = np.minimum(user_pos, len(uniq) - 1)
    has_cutoff = (user_pos < len(uniq)) & (uniq[user_pos_c] == users)
    user_cutoff = np.where(has_cutoff, cutoff[user_pos_c], np.iinfo(np.int64).max)
    train_sorted = ~test_sorted & (stamps <= user_cutoff)

    train = interactions.subset(order[train_sorted])
    test_rows = order[test_sorted]  # grouped by user, chronological
    test_users = interactions.user_ids[test_rows]
    eval_users, test_counts = np.unique(test_users, return_counts=True)
    indptr = np.zeros(len(eval_users) + 1, dtype=np.int64)
    np.cumsum(test_counts, out=indptr[1:])
    return Split(
        train=train,
        users=eval_users,
        test_indptr=indptr,
        test_items=interactions.item_ids[test_rows],
    )


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
    out["users"] = float(n_eval)
    return out


def _eval_histories(model, split: Split) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Evaluated users' (liked history with recency weights, everything rated) matrices."""
    rows = np.searchsorted(model.user_ids, split.users)
    starts = model.user_indptr[rows]
    stops = model.user_indptr[rows + 1]
    idx = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
    items = np.asarray(model.user_items)[idx]
    user_of = np.repeat(np.arange(len(rows)), stops - starts)
    seen = sp.csr_matrix((np.ones(len(items)), (user_of, items)), shape=(len(rows), model.n_items))
    if model.user_positive is not None:
        liked = np.asarray(model.user_positive)[idx]
        items, user_of = items[liked], user_of[liked]
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_of, minlength=len(rows)), out=indptr[1:])
    liked_m = history_matrix(indptr, items, model.n_items, model.params.recency_half_life)
    return liked_m, seen


def evaluate_params(split: Split, params: ModelParams, k: int = max(KS)) -> dict[str, float]:
    """Fit on ``split.train`` with ``params`` and score the hold-out."""
    t0 = time.perf_counter()
    model = fit(split.train, params)
    fit_seconds = time.perf_counter() - t0
    liked, seen = _eval_histories(model, split)
    recs_idx = model.recommend_batch(liked, k, exclude=seen)
    metrics = ranking_metrics(split, model.item_ids[recs_idx], model.n_items)
    metrics["fit_seconds"] = fit_seconds
    metrics["eval_seconds"] = time.perf_counter() - t0 - fit_seconds
    return metrics


def evaluate_popularity(split: Split, k: int = max(KS)) -> dict[str, float]:
    """Most-rated movies in training that the user has not rated yet."""
    t0 = time.perf_counter()
    train = split.train
    items, item_idx = np.unique(train.item_ids, return_inverse=True)
    users, user_idx = np.unique(train.user_ids, return_inverse=True)
    seen = sp.csr_matrix(
        (np.ones(len(item_idx)), (user_idx, item_idx)), shape=(len(users), len(items))
    )
    pop = np.bincount(item_idx, minlength=len(items)).astype(np.float64)
    rows = seen[np.searchsorted(users, split.users)]
    scores = np.broadcast_to(pop, (rows.shape[0], len(items))).copy()
    r, c = rows.nonzero()
    scores[r, c] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    metrics = ranking_metrics(split, items[top], len(items))
    metrics["fit_seconds"] = time.perf_counter() - t0
    metrics["eval_seconds"] = 0.0
    return metrics


def evaluate_ease(split: Split, l2: float = 500.0, k: int = max(KS)) -> dict[str, float]:
    """EASE^R (Steck 2019) on binary interactions - dense n_items^2, small catalogs only.

    Kept as a measured comparison, not served: its closed form needs an n_items x n_items
    inverse (50k items = 10 GB in float32), which breaks the box's scaling budget.
    """
    t0 = time.perf_counter()
    train = split.train
    items, item_idx = np.unique(train.item_ids, return_inverse=True)
    users, user_idx = np.unique(train.user_ids, return_inverse=True)
    x = sp.csr_matrix(
        (np.ones(len(item_idx), np.float32), (user_idx, item_idx)), shape=(len(users), len(items))
    )
    x.data[:] = 1.0
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = p / (-np.diag(p))
    b[np.diag_indices_from(b)] = 0.0
    fit_seconds = time.perf_counter() - t0
    rows = x[np.searchsorted(users, split.users)]
    scores = np.asarray(rows @ b)
    r, c = rows.nonzero()
    scores[r, c] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    metrics = ranking_metrics(split, items[top], len(items))
    metrics["fit_seconds"] = fit_seconds
    metrics["eval_seconds"] = time.perf_counter() - t0 - fit_seconds
    return metrics


def evaluate(
    interactions: Interactions,
    params: ModelParams = ModelParams(),  # noqa: B008 - frozen dataclass
    *,
    reference: ModelParams | None = REFERENCE_PARAMS,
    include_ease: bool = False,
    ablation: bool = True,
) -> dict:
    """Compare ours (``params``) with popularity and the reference BM25 item-kNN.

    ``ablation`` adds ours without recency weighting, so the similarity itself is compared
    like for like with the reference (which weighs every history item the same).
    """
    split = chronological_split(interactions)
    models: dict[str, dict[str, float]] = {"ours": evaluate_params(split, params)}
    if ablation and params.recency_half_life > 0:
        models["ours_no_recency"] = evaluate_params(split, replace(params, recency_half_life=0.0))
    models["popularity"] = evaluate_popularity(split)
    if reference is not None:
        models["reference_bm25_knn"] = evaluate_params(split, reference)
    if ablation:
        models["bm25_knn_implicit_defaults"] = evaluate_params(split, IMPLICIT_DEFAULT_PARAMS)
    if include_ease:
        models["ease"] = evaluate_ease(split)
    return {
        "protocol": {
            "positive_threshold": 4.0,
            "min_positives": 5,
            "test_fraction": 0.2,
            "split": "chronological per user",
            "train_rows": len(split.train),
            "eval_users": int(len(split.users)),
            "test_items": int(len(split.test_items)),
        },
        "params": params.to_dict(),
        "models": models,
    }


COLUMNS = (
    "recall@10",
    "recall@20",
    "ndcg@10",
    "ndcg@20",
    "hitrate@10",
    "coverage@10",
    "fit_seconds",
)


def format_table(results: dict) -> str:
    """Markdown table of ``evaluate`` results (one row per model)."""
    header = "| model | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, metrics in results["models"].items():
        cells = []
        for col in COLUMNS:
            value = metrics.get(col, float("nan"))
            cells.append(f"{value:.2f}s" if col == "fit_seconds" else f"{value:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
