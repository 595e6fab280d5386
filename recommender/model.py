"""Item-item similarity model: arrays in, arrays out, no I/O.

``fit`` turns rating events into a users x items matrix, weights it (BM25 / TF-IDF / none),
computes item-item similarities block by block (``W[:, block].T @ W``) and keeps only the top-K
neighbours of every item. The dense n_items x n_items matrix is never built, so memory is
bounded by ``block x n_items`` floats whatever the catalog size; blocks run on a small thread
pool because scipy's sparse product and numpy's partition release the GIL.

The fitted :class:`SimilarityModel` is nothing but numpy arrays plus the frozen params, so
joblib can store it uncompressed and every worker process can memory-map one copy of it.
Serving-time work (``similar``, ``recommend``) is a handful of vectorised array lookups.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender.data import Interactions

WEIGHTINGS = ("none", "tfidf", "bm25")
SIMILARITIES = ("cosine", "dot")


@dataclass(frozen=True)
class ModelParams:
    """Hyper-parameters; defaults are the best measured on ml-latest-small (docs/recommender.md).

    weighting           how a user's vote for an item is weighted before the item-item product:
                        "bm25" (implicit-style: items = documents, users = terms), "tfidf", "none".
    bm25_k1, bm25_b     BM25 saturation and length (item popularity) normalisation.
    similarity          "cosine" (shrinkage + asymmetry ``alpha``) or "dot" (raw product).
    alpha               asymmetric cosine, sim(i, j) = dot / (|i|^2a * |j|^2(1-a) + shrinkage);
                        0.5 is plain cosine, larger values favour popular neighbours j.
    shrinkage           added to the cosine denominator: damps similarities backed by few users.
    neighbours          K neighbours kept per item (memory: n_items * K * 8 bytes).
    min_rating          ratings below this are dropped before fitting (0 keeps every rating).
    popularity_damping  final user scores are divided by popularity ** damping (< 0 boosts).
    recency_half_life   in a history (oldest first) the item this many positions before the most
                        recent one weighs half as much (0 = every history item weighs the same).
    """

    weighting: str = "bm25"
    bm25_k1: float = 1.2
    bm25_b: float = 0.3
    similarity: str = "cosine"
    alpha: float = 0.6
    shrinkage: float = 10.0
    neighbours: int = 50
    min_rating: float = 3.5
    popularity_damping: float = -0.1
    recency_half_life: float = 3.0

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        if self.neighbours < 1:
            raise ValueError("neighbours must be >= 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be within [0, 1]")
        if self.shrinkage < 0 or self.recency_half_life < 0 or self.bm25_k1 < 0:
            raise ValueError("shrinkage, recency_half_life and bm25_k1 must be >= 0")
        if not 0.0 <= self.bm25_b <= 1.0:
            raise ValueError("bm25_b must be within [0, 1]")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelParams:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(eq=False)
class SimilarityModel:
    """Top-K item neighbours plus the known users' histories, as plain arrays.

    ``neighbours[i]`` holds internal item indices (``-1`` padding) sorted by ``scores[i]``
    descending; ``user_items[user_indptr[u]:user_indptr[u + 1]]`` is user ``u``'s history,
    oldest first, so recency weighting works for known users too.
    """

    item_ids: np.ndarray  # (n_items,) int64, sorted external movie ids
    neighbours: np.ndarray  # (n_items, K) int32, -1 padded
    scores: np.ndarray  # (n_items, K) float32, 0 padded
    item_popularity: np.ndarray  # (n_items,) int32 interaction counts
    user_ids: np.ndarray  # (n_users,) int64, sorted
    user_indptr: np.ndarray  # (n_users + 1,) int64
    user_items: np.ndarray  # (nnz,) int32 item indices, chronological per user
    params: ModelParams = field(default_factory=ModelParams)
    # per user_items entry: rating >= params.min_rating. Only positives drive the scores; every
    # rated movie is excluded from the user's recommendations. None = all positive.
    user_positive: np.ndarray | None = None

    # ---- lookups -------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return int(len(self.item_ids))

    @property
    def n_users(self) -> int:
        return int(len(self.user_ids))

    def _item_index(self, movie_id: int) -> int:
        i = int(np.searchsorted(self.item_ids, movie_id))
        if i < len(self.item_ids) and int(self.item_ids[i]) == int(movie_id):
            return i
        return -1

    def _user_index(self, user_id: int) -> int:
        u = int(np.searchsorted(self.user_ids, user_id))
        if u < len(self.user_ids) and int(self.user_ids[u]) == int(user_id):
            return u
        return -1

    def item_indices(self, movie_ids: Iterable[int]) -> np.ndarray:
        """Internal indices of ``movie_ids`` (``-1`` for unknown ids), vectorised."""
        ids = np.asarray(
            list(movie_ids) if not isinstance(movie_ids, np.ndarray) else movie_ids, dtype=np.int64
        )
        if ids.size == 0 or self.n_items == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ids)
        pos_c = np.minimum(pos, self.n_items - 1)
        return np.where(self.item_ids[pos_c] == ids, pos_c, -1)

    def has_item(self, movie_id: int) -> bool:
        return self._item_index(movie_id) >= 0

    def has_user(self, user_id: int) -> bool:
        return self._user_index(user_id) >= 0

    # ---- queries -------------------------------------------------------------------------
    def similar(self, movie_id: int, k: int = 10) -> list[tuple[int, float]]:
        """Top-``k`` most similar movies (never the movie itself); KeyError if unknown."""
        i = self._item_index(movie_id)
        if i < 0:
            raise KeyError(movie_id)
        row = np.asarray(self.neighbours[i])
        valid = row >= 0
        idx = row[valid][: max(k, 0)]
        sc = np.asarray(self.scores[i])[valid][: max(k, 0)]
        return list(zip(self.item_ids[idx].tolist(), sc.astype(float).tolist(), strict=True))

    def similar_many(
        self, movie_ids: Iterable[int], k: int = 10
    ) -> dict[int, list[tuple[int, float]]]:
        """``similar`` for several movies; unknown ids are left out of the result."""
        out: dict[int, list[tuple[int, float]]] = {}
        for movie_id in movie_ids:
            if self.has_item(movie_id):
                out[int(movie_id)] = self.similar(movie_id, k)
        return out

    def popular(self, k: int = 10, exclude: Iterable[int] = ()) -> list[tuple[int, float]]:
        """Most interacted-with movies, score = interaction count; ``exclude`` are movie ids."""
        idx = self._popular_indices(k, self.item_indices(list(exclude)))
        pop = self.item_popularity[idx].astype(float)
        return list(zip(self.item_ids[idx].tolist(), pop.tolist(), strict=True))

    def recommend(
        self, history: Sequence[int], k: int = 10, exclude: bool = True
    ) -> list[tuple[int, float]]:
        """Aggregate the neighbours of ``history`` (movie ids, oldest first).

        Unknown ids are ignored; with nothing known the answer is the most popular movies.
        History items are excluded when ``exclude``; short lists are topped up with popular
        movies (score 0.0) so callers always get ``k`` items when the catalog has them.
        """
        idx = self.item_indices(list(history))
        idx = idx[idx >= 0]
        return self._recommend_indices(idx, k, exclude)

    def recommend_user(self, user_id: int, k: int = 10) -> list[tuple[int, float]]:
        """Recommendations for a user seen in training; KeyError if unknown."""
        u = self._user_index(user_id)
        if u < 0:
            raise KeyError(user_id)
        start, stop = int(self.user_indptr[u]), int(self.user_indptr[u + 1])
        rated = np.asarray(self.user_items[start:stop]).astype(np.int64)
        if self.user_positive is None:
            return self._recommend_indices(rated, k, True)
        liked = rated[np.asarray(self.user_positive[start:stop])]
        return self._recommend_indices(liked, k, True, also_exclude=rated)

    # ---- internals -----------------------------------------------------------------------
    def _popular_indices(self, k: int, exclude_idx: np.ndarray) -> np.ndarray:
        pop = np.asarray(self.item_popularity, dtype=np.float64).copy()
        if exclude_idx.size:
            pop[exclude_idx[exclude_idx >= 0]] = -np.inf
        k = min(k, int(np.isfinite(pop).sum()))
        if k <= 0:
            return np.empty(0, dtype=np.int64)
        top = np.argpartition(-pop, k - 1)[:k]
        return top[np.lexsort((top, -pop[top]))]

    def _recommend_indices(
        self, hist: np.ndarray, k: int, exclude: bool, also_exclude: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        hist = hist.astype(np.int64)
        if exclude and also_exclude is not None:
            excluded = np.union1d(hist, also_exclude)
        else:
            excluded = hist if exclude else np.empty(0, np.int64)
        if hist.size == 0:
            idx = self._popular_indices(k, excluded)
            pop = self.item_popularity[idx].astype(float)
            return list(zip(self.item_ids[idx].tolist(), pop.tolist(), strict=True))
        weights = history_weights(len(hist), self.params.recency_half_life)
        nb = np.asarray(self.neighbours[hist])
        sc = np.asarray(self.scores[hist]) * weights[:, None]
        valid = nb >= 0
        cand, inverse = np.unique(nb[valid], return_inverse=True)
        totals = np.bincount(inverse, weights=sc[valid], minlength=len(cand))
        totals = _damp(totals, self.item_popularity[cand], self.params.popularity_damping)
        keep = totals > 0
        if excluded.size:
            keep &= ~np.isin(cand, excluded)
        cand, totals = cand[keep], totals[keep]
        n = min(k, len(cand))
        if n:
            # everything tied with the n-th best goes into the exact sort, so ties are broken
            # the same way every time: score, then popularity, then lower index
            kth = -np.partition(-totals, n - 1)[n - 1]
            sel = np.flatnonzero(totals >= kth)
            pop = np.asarray(self.item_popularity)[cand[sel]]
            top = sel[np.lexsort((cand[sel], -pop, -totals[sel]))][:n]
            chosen, chosen_scores = cand[top], totals[top]
        else:
            chosen, chosen_scores = np.empty(0, np.int64), np.empty(0)
        result = list(
            zip(self.item_ids[chosen].tolist(), chosen_scores.astype(float).tolist(), strict=True)
        )
        if len(result) < k:
            skip = np.concatenate([chosen, excluded])
            fill = self._popular_indices(k - len(result), skip)
            result += [(int(self.item_ids[i]), 0.0) for i in fill]
        return result

    def similarity_matrix(self) -> sp.csr_matrix:
        """The kept neighbours as a sparse n_items x n_items matrix (row = source item)."""
        n, kk = self.neighbours.shape if self.neighbours.ndim == 2 else (0, 0)
        nb = np.asarray(self.neighbours)
        valid = nb >= 0
        rows = np.repeat(np.arange(n), kk).reshape(n, kk)[valid]
        return sp.csr_matrix(
            (np.asarray(self.scores)[valid].astype(np.float32), (rows, nb[valid])), shape=(n, n)
        )

    def recommend_batch(
        self,
        histories: sp.csr_matrix,
        k: int,
        exclude: sp.csr_matrix | None = None,
        batch_size: int = 2048,
    ) -> np.ndarray:
        """Top-``k`` internal item indices for many histories at once (used by evaluation).

        ``histories`` is users x n_items with the per-item history weights already applied
        (see :func:`history_matrix`); items present in a row of ``exclude`` (default:
        ``histories``) are never recommended. Rows with fewer than
        ``k`` scored candidates are topped up with popular items, like ``recommend``.
        """
        sim = self.similarity_matrix()
        damping = _damp(np.ones(self.n_items), self.item_popularity, self.params.popularity_damping)
        pop_order = self._popular_indices(self.n_items, np.empty(0, np.int64))
        pop_rank = np.empty(self.n_items, dtype=np.float64)
        pop_rank[pop_order] = np.arange(self.n_items)
        # a tiny popularity tie-breaker: exact ties rank like ``recommend`` (popularity, then
        # index) and rows without scored candidates fall back to popular items
        tie = 1e-9 * (1.0 - pop_rank / max(self.n_items, 1))
        out = np.empty((histories.shape[0], k), dtype=np.int64)
        for start in range(0, histories.shape[0], batch_size):
            h = histories[start : start + batch_size]
            dense = (h @ sim).toarray().astype(np.float64) * damping + tie
            rows, cols = (h if exclude is None else exclude[start : start + batch_size]).nonzero()
            dense[rows, cols] = -np.inf
            top = np.argpartition(-dense, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(dense, top, axis=1), axis=1, kind="stable")
            out[start : start + batch_size] = np.take_along_axis(top, order, axis=1)
        return out


def _damp(values: np.ndarray, popularity: np.ndarray, damping: float) -> np.ndarray:
    if damping == 0:
        return np.asarray(values, dtype=np.float64)
    return values / np.maximum(np.asarray(popularity, dtype=np.float64), 1.0) ** damping


def history_weights(n: int, half_life: float) -> np.ndarray:
    """Weight of each position of an oldest-first history (most recent = 1)."""
    if half_life <= 0 or n == 0:
        return np.ones(n, dtype=np.float64)
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    return np.power(0.5, age / half_life)


def history_matrix(
    indptr: np.ndarray, items: np.ndarray, n_items: int, half_life: float
) -> sp.csr_matrix:
    """CSR of oldest-first histories with recency weights, for ``recommend_batch``."""
    lengths = np.diff(indptr)
    if half_life > 0:
        ends = np.repeat(indptr[1:], lengths)
        age = (ends - 1 - np.arange(len(items))).astype(np.float64)
        data = np.power(0.5, age / half_life)
    else:
        data = np.ones(len(items), dtype=np.float64)
    m = sp.csr_matrix((data, items, indptr), shape=(len(lengths), n_items))
    m.sum_duplicates()
    return m


# ---- fitting -----------------------------------------------------------------------------
def _index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(values, return_inverse=True)
    return uniq, inverse.astype(np.int32)


def _weight(x: sp.csr_matrix, params: ModelParams) -> sp.csr_matrix:
    """Weight a users x items matrix, implicit-style: items are documents, users are terms."""
    n_users, n_items = x.shape
    x = x.tocoo(copy=True)
    if params.weighting == "none":
        return x.tocsr()
    user_counts = np.bincount(x.row, minlength=n_users).astype(np.float64)
    idf = np.log(n_items / (1.0 + user_counts))
    idf = np.maximum(idf, 0.0)
    data = x.data.astype(np.float64)
    if params.weighting == "tfidf":
        data = np.sqrt(data) * idf[x.row]
    else:  # bm25
        item_len = np.bincount(x.col, weights=data, minlength=n_items)
        avg = item_len[item_len > 0].mean() if np.any(item_len > 0) else 1.0
        length_norm = (1.0 - params.bm25_b) + params.bm25_b * item_len / avg
        data = data * (params.bm25_k1 + 1.0) / (params.bm25_k1 * length_norm[x.col] + data)
        data = data * idf[x.row]
    return sp.csr_matrix((data.astype(np.float32), (x.row, x.col)), shape=x.shape)


def _block_topk(
    wt: sp.csr_matrix,
    w: sp.csr_matrix,
    sq_norms: np.ndarray,
    start: int,
    stop: int,
    params: ModelParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K neighbours of items [start, stop): one sparse product, one partition."""
    n_items = w.shape[1]
    kk = min(params.neighbours, max(n_items - 1, 1))
    dense = (wt[start:stop] @ w).toarray()
    if params.similarity == "cosine":
        left = np.power(sq_norms[start:stop], np.float32(params.alpha))
        right = np.power(sq_norms, np.float32(1.0 - params.alpha))
        denom = np.multiply.outer(left, right)
        denom += np.float32(params.shrinkage)
        np.divide(dense, denom, out=dense, where=denom > 0)
        del denom
    rows = np.arange(stop - start)
    dense[rows, rows + start] = 0.0  # never your own neighbour
    if kk < n_items:
        top = np.argpartition(-dense, kk - 1, axis=1)[:, :kk]
    else:
        top = np.broadcast_to(np.arange(n_items), (stop - start, n_items)).copy()
    top_scores = np.take_along_axis(dense, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1).astype(np.int32)
    top_scores = np.take_along_axis(top_scores, order, axis=1).astype(np.float32)
    empty = top_scores <= 0
    top[empty] = -1
    top_scores[empty] = 0.0
    if top.shape[1] < params.neighbours:  # tiny catalogs: pad to the requested width
        pad = params.neighbours - top.shape[1]
        top = np.pad(top, ((0, 0), (0, pad)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)))
    return top, top_scores


def fit(
    interactions: Interactions,
    params: ModelParams = ModelParams(),  # noqa: B008 - frozen dataclass, safe default
    progress: bool = False,
    *,
    n_jobs: int | None = None,
    block_bytes: int = 128 << 20,
) -> SimilarityModel:
    """Fit the item-kNN model. Memory ~ nnz * 24 bytes + n_jobs * 3 * block_bytes."""
    positive = interactions.ratings >= params.min_rating
    if not positive.any():
        raise ValueError("no interactions left to fit (check min_rating)")
    # the catalog is what somebody liked; users keep every rating of a catalog movie (so what
    # they rated low is never recommended back to them), only the positives build similarity
    item_ids = np.unique(interactions.item_ids[positive])
    in_catalog = np.isin(interactions.item_ids, item_ids)
    inter = interactions.subset(in_catalog) if not in_catalog.all() else interactions
    positive = positive[in_catalog]
    user_ids, u = _index(inter.user_ids)
    i = np.searchsorted(item_ids, inter.item_ids).astype(np.int32)
    n_users, n_items = len(user_ids), len(item_ids)

    # users' chronological histories (ties broken by movie id, so results are deterministic)
    order = np.lexsort((i, inter.timestamps, u))
    u_sorted, i_sorted, pos_sorted = u[order], i[order], positive[order]
    x = sp.csr_matrix(
        (np.ones(int(positive.sum()), dtype=np.float32), (u[positive], i[positive])),
        shape=(n_users, n_items),
    )
    x.sum_duplicates()
    x.data[:] = 1.0  # a re-rated movie is still one interaction
    # de-duplicate histories too, keeping the latest position of each (user, item)
    last = np.ones(len(u_sorted), dtype=bool)
    pair = u_sorted.astype(np.int64) * n_items + i_sorted
    _, first_from_end = np.unique(pair[::-1], return_index=True)
    last[:] = False
    last[len(pair) - 1 - first_from_end] = True
    u_hist, i_hist, pos_hist = u_sorted[last], i_sorted[last], pos_sorted[last]
    user_indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u_hist, minlength=n_users), out=user_indptr[1:])
    popularity = np.diff(x.tocsc().indptr).astype(np.int32)

    w = _weight(x, params)
    wt = w.T.tocsr()
    sq_norms = np.asarray(w.multiply(w).sum(axis=0)).ravel().astype(np.float32)

    block = max(1, min(n_items, block_bytes // max(1, n_items * 4)))
    starts = list(range(0, n_items, block))
    kk = params.neighbours
    neighbours = np.full((n_items, kk), -1, dtype=np.int32)
    scores = np.zeros((n_items, kk), dtype=np.float32)
    jobs = n_jobs or min(2, os.cpu_count() or 1)

    def run(start: int) -> int:
        stop = min(start + block, n_items)
        nb, sc = _block_topk(wt, w, sq_norms, start, stop, params)
        neighbours[start:stop] = nb
        scores[start:stop] = sc
        return stop - start

    bar = _progress(len(starts), progress)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for _ in pool.map(run, starts):
            bar.update(1)
    bar.close()

    return SimilarityModel(
        item_ids=item_ids.astype(np.int64),
        neighbours=neighbours,
        scores=scores,
        item_popularity=popularity,
        user_ids=user_ids.astype(np.int64),
        user_indptr=user_indptr,
        user_items=i_hist.astype(np.int32),
        params=params,
        user_positive=pos_hist,
    )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="item blocks", unit="block")


__all__ = [
    "ModelParams",
    "SimilarityModel",
    "fit",
    "history_matrix",
    "history_weights",
]
