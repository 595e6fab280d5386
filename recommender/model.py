"""The served model: arrays in, arrays out, no I/O.

Two questions, two tables (both :class:`~recommender.neighbours.Neighbours`, so they memory-map):

* **Recommendations for a history** score every movie as
  ``EASE(everything rated) + knn_weight * kNN(liked, recent first)``. EASE (``recommender.ease``,
  pruned to each movie's top weights) is the stronger model of "people who rated these also
  rated"; the item-kNN over liked movies, with recent likes weighing more, adds what a person
  is into *now*. Measured on held-out data the blend beats both, and beats a tuned EASE
  (docs/recommender.md). Catalogs too large for a dense EASE use the kNN alone
  (``algorithm`` in the manifest says which).
* **Similar movies** are the kNN's lists (BM25-weighted asymmetric cosine over likes), which read
  well. Movies with few likes get a blend with their content neighbours (genres, tags, title,
  year; ``recommender.content``), movies nobody liked get content neighbours alone, so every
  catalog movie has an answer, and each list says which it is (``similar_source``).

Every path that recommends - the served ``/v1/users/{id}/recommendations`` and
``/v1/recommendations``, ``python -m recommender predict``, the batch worker, and evaluation -
goes through :meth:`SimilarityModel.top_items`, so they agree to the last digit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender import ease as ease_mod
from recommender.data import Catalog, Interactions, chronological_order
from recommender.neighbours import Neighbours, blend_rows, top_k_rows

WEIGHTINGS = ("none", "tfidf", "bm25")
SIMILARITIES = ("cosine", "dot")
ALGORITHMS = ("auto", "ease+knn", "knn", "popularity")  # popularity: a baseline
# what an item's similar list (or a history's recommendations) is based on
SOURCES = ("none", "collaborative", "blend", "content", "popularity")
NONE, COLLABORATIVE, BLEND, CONTENT, POPULARITY = range(5)


@dataclass(frozen=True)
class ModelParams:
    """Hyper-parameters; defaults are chosen on a validation split of ml-latest-small by
    ``python -m recommender evaluate`` (docs/recommender.md).

    kNN (similar lists, and the "what now" part of recommendations):
    weighting           how a user's like is weighted before the item-item product:
                        "bm25" (implicit-style: items = documents, users = terms), "tfidf", "none".
    bm25_k1, bm25_b     BM25 saturation and length (item popularity) normalisation.
    similarity          "cosine" (shrinkage + asymmetry ``alpha``) or "dot" (raw product).
    alpha               asymmetric cosine, sim(i, j) = dot / (|i|^2a * |j|^2(1-a) + shrinkage);
                        0.5 is plain cosine, larger values favour popular neighbours j.
    shrinkage           added to the cosine denominator: damps similarities backed by few users.
    neighbours          K neighbours kept per movie.
    min_rating          a rating >= this is a like; likes build the kNN (every rating is EASE
                        input, and every rated movie is excluded from recommendations).
    recency_half_life   among a history's likes (oldest first), the like this many positions
                        before the most recent one weighs half (0 = all weigh the same).
    EASE:
    algorithm           "auto" (EASE + kNN while the EASE items fit ``dense_max_items``, else the
                        kNN alone), "ease+knn", "knn", or "popularity" (a deliberately weak
                        baseline: the most rated movies for everything, ``recommender.popularity``).
    ease_l2             EASE's L2 regularisation (lambda).
    ease_neighbours     top-N weights (by magnitude) kept per movie of the dense EASE matrix.
    ease_min_users      movies rated by fewer users stay out of EASE (cost is cubic in movies).
    knn_weight          user score = EASE + knn_weight * kNN.
    popularity_weight   movies with a positive score get popularity_weight * popularity / max
                        popularity / history length on top: a prior that matters for short
                        histories and fades for long ones (and ranks an empty history).
    dense_max_items     the most movies a dense EASE may have (n^2 float32 + n^3 flops).
    Similar lists:
    blend_likes         movies with fewer likes than this blend in their content neighbours,
                        the collaborative share being likes / blend_likes (0 = never blend).
    """

    weighting: str = "bm25"
    bm25_k1: float = 1.2
    bm25_b: float = 0.3
    similarity: str = "cosine"
    alpha: float = 0.6
    shrinkage: float = 10.0
    neighbours: int = 50
    min_rating: float = 3.5
    recency_half_life: float = 3.0
    algorithm: str = "auto"
    ease_l2: float = 200.0
    ease_neighbours: int = 500
    ease_min_users: int = 10
    knn_weight: float = 0.4
    popularity_weight: float = 3.0
    dense_max_items: int = 16_000
    blend_likes: int = 20

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.neighbours < 1 or self.ease_neighbours < 1:
            raise ValueError("neighbours and ease_neighbours must be >= 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be within [0, 1]")
        if min(self.shrinkage, self.recency_half_life, self.bm25_k1, self.knn_weight) < 0:
            raise ValueError("shrinkage, recency_half_life, bm25_k1 and knn_weight must be >= 0")
        if self.popularity_weight < 0:
            raise ValueError("popularity_weight must be >= 0")
        if self.ease_l2 <= 0:
            raise ValueError("ease_l2 must be > 0")
        if not 0.0 <= self.bm25_b <= 1.0:
            raise ValueError("bm25_b must be within [0, 1]")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelParams:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Recommendations:
    """One history's answer: ranked ``(movie_id, score)``, what it is based on, what was
    ignored. Scores are the model's (0.0 = no evidence: a popular movie filling the list)."""

    items: list[tuple[int, float]]
    source: str  # "collaborative" | "content" | "blend" | "fallback" (nothing known: popular)
    ignored: list[int] = field(default_factory=list)  # history ids the model does not know


@dataclass(eq=False)
class SimilarityModel:
    """The fitted model: numpy arrays plus the params (joblib stores it, workers mmap it).

    ``user_items[user_indptr[u]:user_indptr[u + 1]]`` is user ``u``'s history (item indices,
    oldest first, one entry per movie) and ``user_liked`` marks the likes in it.
    """

    item_ids: np.ndarray  # (n_items,) int64, sorted external movie ids: the catalog
    item_popularity: np.ndarray  # (n_items,) int32, users who rated the movie
    item_likes: np.ndarray  # (n_items,) int32, users who liked it
    knn: Neighbours  # kNN for user scores (content rows for movies nobody liked)
    similar_lists: Neighbours  # the served similar lists
    similar_source: np.ndarray  # (n_items,) uint8 index into SOURCES
    item_basis: np.ndarray  # (n_items,) uint8: COLLABORATIVE, CONTENT or NONE for user scores
    user_ids: np.ndarray  # (n_users,) int64, sorted
    user_indptr: np.ndarray  # (n_users + 1,) int64
    user_items: np.ndarray  # (nnz,) int32
    user_liked: np.ndarray  # (nnz,) bool
    params: ModelParams = field(default_factory=ModelParams)
    ease: Neighbours | None = None  # pruned EASE weights (None: algorithm "knn")
    algorithm: str = "knn"
    timings: dict = field(default_factory=dict)  # seconds per fit stage

    # ---- lookups -------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return int(len(self.item_ids))

    @property
    def n_users(self) -> int:
        return int(len(self.user_ids))

    @property
    def nbytes(self) -> int:
        tables = [self.knn, self.similar_lists] + ([self.ease] if self.ease is not None else [])
        arrays = [self.item_ids, self.item_popularity, self.item_likes, self.similar_source]
        arrays += [self.user_ids, self.user_indptr, self.user_items, self.user_liked]
        unique = {id(t): t.nbytes for t in tables}
        return sum(unique.values()) + sum(a.nbytes for a in arrays)

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

    # ---- similar movies ------------------------------------------------------------------
    def similar(self, movie_id: int, k: int = 10) -> list[tuple[int, float]]:
        """Top-``k`` similar movies (never the movie itself); KeyError if unknown."""
        i = self._item_index(movie_id)
        if i < 0:
            raise KeyError(movie_id)
        idx, w = self.similar_lists.row(i)
        k = max(k, 0)
        return list(zip(self.item_ids[idx[:k]].tolist(), w[:k].astype(float).tolist(), strict=True))

    def similar_source_of(self, movie_id: int) -> str:
        """What ``similar(movie_id)`` is based on: collaborative, blend, content (or none)."""
        i = self._item_index(movie_id)
        if i < 0:
            raise KeyError(movie_id)
        return SOURCES[int(self.similar_source[i])]

    # ---- recommendations -----------------------------------------------------------------
    def popular(self, k: int = 10, exclude: Iterable[int] = ()) -> list[tuple[int, float]]:
        """The most rated movies, score 0.0 (popularity is not evidence about a person)."""
        return self.recommend_history([], k=k, exclude_ids=exclude).items

    def recommend(
        self, history: Sequence[int], k: int = 10, exclude: bool = True
    ) -> list[tuple[int, float]]:
        """Recommendations for movie ids (oldest first, all liked); unknown ids are ignored."""
        return self.recommend_history(history, k=k, exclude=exclude).items

    def recommend_history(
        self,
        movie_ids: Sequence[int] | np.ndarray,
        ratings: Sequence[float] | np.ndarray | None = None,
        timestamps: Sequence[int] | np.ndarray | None = None,
        *,
        k: int = 10,
        exclude: bool = True,
        exclude_ids: Iterable[int] = (),
    ) -> Recommendations:
        """Recommendations for a history given from outside (an API call, a predict file).

        The history is put in the shape training gives a known user: ordered by timestamp
        (ties by movie id; row order when there are no timestamps), one entry per movie (the
        latest), liked = rating >= ``min_rating`` (no rating, NaN: liked). So a user's rows of
        the training file give exactly ``recommend_user``'s answer.
        """
        ids = np.asarray(list(movie_ids), dtype=np.int64)
        idx = self.item_indices(ids)
        ignored = list(dict.fromkeys(ids[idx < 0].tolist()))
        rated = (
            np.full(len(ids), np.nan, np.float32)
            if ratings is None
            else np.asarray(ratings, dtype=np.float32)
        )
        known = idx >= 0
        idx, rated = idx[known], rated[known]
        if timestamps is not None:
            stamps = np.asarray(timestamps, dtype=np.int64)[known]
            order = np.lexsort((idx, stamps))
            idx, rated = idx[order], rated[order]
        keep = _last_of_each(idx)
        idx, rated = idx[keep], rated[keep]
        liked = ~(rated < self.params.min_rating)  # NaN (no rating) counts as a like
        extra = self.item_indices(list(exclude_ids))
        top, scores = self.top_items(
            np.array([0, len(idx)], np.int64),
            idx,
            liked,
            k,
            exclude=exclude,
            extra_exclude=extra[extra >= 0],
        )
        items = _pairs(self.item_ids, top[0], scores[0])
        return Recommendations(items, self.history_source(idx), ignored)

    def recommend_user(self, user_id: int, k: int = 10) -> list[tuple[int, float]]:
        """Recommendations for a user seen in training; KeyError if unknown."""
        u = self._user_index(user_id)
        if u < 0:
            raise KeyError(user_id)
        start, stop = int(self.user_indptr[u]), int(self.user_indptr[u + 1])
        top, scores = self.top_items(
            np.array([0, stop - start], np.int64),
            np.asarray(self.user_items[start:stop]),
            np.asarray(self.user_liked[start:stop]),
            k,
        )
        return _pairs(self.item_ids, top[0], scores[0])

    def history_source(self, idx: np.ndarray) -> str:
        """What recommendations for these (known) items rest on."""
        basis = np.asarray(self.item_basis)[idx] if len(idx) else np.empty(0, np.uint8)
        basis = basis[basis != NONE]
        if basis.size == 0:
            return "fallback"
        if np.all(basis == COLLABORATIVE):
            return "collaborative"
        if np.all(basis == CONTENT):
            return "content"
        return "blend"

    # ---- scoring (every path) ------------------------------------------------------------
    def score_rows(self, indptr: np.ndarray, items: np.ndarray, liked: np.ndarray) -> np.ndarray:
        """Dense scores (n_histories x n_items, float64) of a batch of histories.

        ``items[indptr[h]:indptr[h + 1]]`` is history ``h`` (item indices, oldest first, one per
        movie), ``liked`` its like flags. Callers keep batches small (rows x n_items floats).
        """
        n_rows = len(indptr) - 1
        lengths = np.diff(indptr)
        rows = np.repeat(np.arange(n_rows), lengths)
        knn_w = _recency_weights(indptr, liked, self.params.recency_half_life)
        liked_m = sp.csr_matrix(
            (knn_w[liked], (rows[liked], items[liked])), shape=(n_rows, self.n_items)
        )
        scores = np.asarray((liked_m @ self.knn.matrix(self.n_items)).todense(), np.float64)
        if self.ease is not None:
            scores *= self.params.knn_weight
            all_m = sp.csr_matrix(
                (np.ones(len(items), np.float32), (rows, items)), shape=(n_rows, self.n_items)
            )
            scores += (all_m @ self.ease.matrix(self.n_items)).toarray()
        if self.params.popularity_weight > 0:
            popularity = np.asarray(self.item_popularity, dtype=np.float64)
            prior = popularity / max(float(popularity.max(initial=0)), 1.0)
            boost = (self.params.popularity_weight / np.maximum(lengths, 1))[:, None] * prior
            # only movies the history speaks for (or anything, for an empty history): a short
            # history gets the popular movies among those related to it, not the top chart
            scores += boost * ((scores > 0) | (lengths == 0)[:, None])
        return scores

    def top_items(
        self,
        indptr: np.ndarray,
        items: np.ndarray,
        liked: np.ndarray,
        k: int,
        *,
        exclude: bool = True,
        extra_exclude: np.ndarray | None = None,
        batch: int = 256,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores per history (rows padded with -1 / 0).

        Every rated movie is excluded (with ``exclude``). Exact score ties go to the more
        popular movie, then the lower index; movies without evidence score 0.0, so a short
        list is filled with popular movies and a history of nothing known gets popular movies.
        """
        n_rows = len(indptr) - 1
        k = max(0, min(k, self.n_items))
        top = np.full((n_rows, k), -1, dtype=np.int64)
        top_scores = np.zeros((n_rows, k), dtype=np.float64)
        popularity = np.asarray(self.item_popularity)
        for b0 in range(0, n_rows, batch):
            b1 = min(b0 + batch, n_rows)
            lo, hi = int(indptr[b0]), int(indptr[b1])
            sub_ptr = np.asarray(indptr[b0 : b1 + 1]) - lo
            sub_items = np.asarray(items[lo:hi], dtype=np.int64)
            scores = self.score_rows(sub_ptr, sub_items, np.asarray(liked[lo:hi], dtype=bool))
            if exclude:
                rows = np.repeat(np.arange(b1 - b0), np.diff(sub_ptr))
                scores[rows, sub_items] = -np.inf
            if extra_exclude is not None and len(extra_exclude):
                scores[:, extra_exclude] = -np.inf
            for r in range(b1 - b0):
                chosen = _top_row(scores[r], popularity, k)
                top[b0 + r, : len(chosen)] = chosen
                top_scores[b0 + r, : len(chosen)] = scores[r, chosen]
        return top, top_scores


def _pairs(item_ids: np.ndarray, top: np.ndarray, scores: np.ndarray) -> list[tuple[int, float]]:
    valid = top >= 0
    return list(
        zip(item_ids[top[valid]].tolist(), scores[valid].astype(float).tolist(), strict=True)
    )


def _top_row(row: np.ndarray, popularity: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best finite scores: score, then popularity, then lower index."""
    finite = np.isfinite(row)
    n = min(k, int(finite.sum()))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    kth = -np.partition(-np.where(finite, row, -np.inf), n - 1)[n - 1]
    sel = np.flatnonzero(row >= kth)
    order = np.lexsort((sel, -popularity[sel], -row[sel]))[:n]
    return sel[order]


def _last_of_each(idx: np.ndarray) -> np.ndarray:
    """Mask keeping the last occurrence of each value (a re-rated movie counts once, latest)."""
    keep = np.zeros(len(idx), dtype=bool)
    if len(idx):
        _, first_from_end = np.unique(idx[::-1], return_index=True)
        keep[len(idx) - 1 - first_from_end] = True
    return keep


def _recency_weights(indptr: np.ndarray, liked: np.ndarray, half_life: float) -> np.ndarray:
    """Per history entry: 0.5 ** (likes after it in its history / half_life) for likes."""
    weights = np.zeros(len(liked), dtype=np.float64)
    if half_life <= 0:
        weights[liked] = 1.0
        return weights
    lengths = np.diff(indptr)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    likes_per_row = np.bincount(rows[liked], minlength=len(lengths))
    rank = np.cumsum(liked) - 1  # global rank among likes
    first_like = np.concatenate([[0], np.cumsum(likes_per_row)[:-1]])
    age = likes_per_row[rows] - 1 - (rank - first_like[rows])
    weights[liked] = np.power(0.5, age[liked] / half_life)
    return weights


# ---- fitting -----------------------------------------------------------------------------
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


def knn_table(
    liked: sp.csr_matrix,
    params: ModelParams,
    tie: np.ndarray,
    *,
    n_jobs: int | None = None,
    block_bytes: int = 128 << 20,
) -> Neighbours:
    """Top-K item-item similarities of a users x items likes matrix, block by block."""
    w = _weight(liked, params)
    wt = w.T.tocsr()
    sq_norms = np.asarray(w.multiply(w).sum(axis=0)).ravel().astype(np.float32)
    right = np.power(sq_norms, np.float32(1.0 - params.alpha))

    def product(start: int, stop: int) -> np.ndarray:
        dense = (wt[start:stop] @ w).toarray()
        if params.similarity == "cosine":
            denom = np.multiply.outer(
                np.power(sq_norms[start:stop], np.float32(params.alpha)), right
            )
            denom += np.float32(params.shrinkage)
            np.divide(dense, denom, out=dense, where=denom > 0)
        return dense

    n = liked.shape[1]
    return top_k_rows(
        n, n, product, params.neighbours, tie=tie, block_bytes=block_bytes, n_jobs=n_jobs
    )


def choose_algorithm(params: ModelParams, popularity: np.ndarray) -> str:
    """EASE + kNN while the EASE movies fit a dense matrix, else the kNN alone."""
    if params.algorithm != "auto":
        return params.algorithm
    n_ease = int((popularity >= params.ease_min_users).sum())
    return "ease+knn" if 0 < n_ease <= params.dense_max_items else "knn"


def _popularity_rank(popularity: np.ndarray) -> np.ndarray:
    """Tie-breaker in [0, 1): more popular = higher; equal popularity by lower index."""
    n = len(popularity)
    order = np.lexsort((np.arange(n), -popularity.astype(np.int64)))
    rank = np.empty(n, dtype=np.float64)
    rank[order] = np.arange(n)
    return (1.0 - rank / max(n, 1)).astype(np.float32)


def fit(
    interactions: Interactions,
    params: ModelParams = ModelParams(),  # noqa: B008 - frozen dataclass, safe default
    catalog: Catalog | None = None,
    progress: bool = False,
    *,
    n_jobs: int | None = None,
    block_bytes: int = 128 << 20,
) -> SimilarityModel:
    """Fit the served model on rating events (and the movies' metadata, when given).

    Memory: the interactions, two users x items CSR matrices (~12 bytes per rating each), the
    kNN blocks (``block_bytes`` per thread) and, with EASE, one dense n_ease^2 float32 matrix.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    log = _progress_log(progress)
    if len(interactions) == 0:
        raise ValueError("no interactions to fit")
    liked_rows = ~(interactions.ratings < params.min_rating)
    if not liked_rows.any():
        raise ValueError("no interactions left to fit (check min_rating)")
    rated_ids, rated_idx = np.unique(interactions.item_ids, return_inverse=True)
    item_ids = rated_ids if catalog is None else np.union1d(rated_ids, catalog.movie_ids)
    i = np.searchsorted(item_ids, rated_ids).astype(np.int32)[rated_idx]
    del rated_idx
    user_ids, u = np.unique(interactions.user_ids, return_inverse=True)
    u = u.astype(np.int32)
    n_users, n_items = len(user_ids), len(item_ids)

    # chronological histories, one entry per (user, movie): the latest rating counts
    order = chronological_order(u, interactions.timestamps, i)
    u_sorted, i_sorted, liked_sorted = u[order], i[order], liked_rows[order]
    del order, u, i
    pair = u_sorted.astype(np.int64) * n_items + i_sorted
    _, first_from_end = np.unique(pair[::-1], return_index=True)
    del pair
    last = np.zeros(len(u_sorted), dtype=bool)
    last[len(u_sorted) - 1 - first_from_end] = True
    del first_from_end
    u_hist, i_hist, liked_hist = u_sorted[last], i_sorted[last], liked_sorted[last]
    del u_sorted, i_sorted, liked_sorted, last
    user_indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u_hist, minlength=n_users), out=user_indptr[1:])
    popularity = np.bincount(i_hist, minlength=n_items).astype(np.int32)
    likes = np.bincount(i_hist[liked_hist], minlength=n_items).astype(np.int32)
    tie = _popularity_rank(popularity)
    timings["prepare_s"] = time.perf_counter() - started
    log(f"{n_users} users, {n_items} movies, {len(u_hist)} ratings")
    if params.algorithm == "popularity":
        from recommender.popularity import popular_lists

        timings["fit_s"] = time.perf_counter() - started
        return SimilarityModel(
            item_ids=item_ids.astype(np.int64),
            item_popularity=popularity,
            item_likes=likes,
            knn=Neighbours.empty(n_items),
            similar_lists=popular_lists(popularity, tie, params.neighbours),
            similar_source=np.full(n_items, POPULARITY, dtype=np.uint8),
            item_basis=np.full(n_items, NONE, dtype=np.uint8),
            user_ids=user_ids.astype(np.int64),
            user_indptr=user_indptr,
            user_items=i_hist.astype(np.int32),
            user_liked=liked_hist.astype(bool),
            params=params,
            algorithm="popularity",
            timings={k: round(v, 3) for k, v in timings.items()},
        )

    t0 = time.perf_counter()
    x_liked = sp.csr_matrix(
        (np.ones(int(liked_hist.sum()), np.float32), (u_hist[liked_hist], i_hist[liked_hist])),
        shape=(n_users, n_items),
    )
    knn = knn_table(x_liked, params, tie, n_jobs=n_jobs, block_bytes=block_bytes)
    del x_liked
    timings["knn_s"] = time.perf_counter() - t0
    log(f"kNN: {timings['knn_s']:.1f}s")

    algorithm = choose_algorithm(params, popularity)
    ease_table = None
    if algorithm == "ease+knn":
        t0 = time.perf_counter()
        keep = np.flatnonzero(popularity >= params.ease_min_users)
        x_all = sp.csr_matrix(
            (np.ones(len(i_hist), np.float32), (u_hist, i_hist)), shape=(n_users, n_items)
        )
        b = ease_mod.weights(x_all[:, keep], params.ease_l2)
        del x_all
        pruned = ease_mod.prune(b, params.ease_neighbours, tie=tie[keep])
        del b
        ease_table = ease_mod.expand(pruned, keep, n_items)
        timings["ease_s"] = time.perf_counter() - t0
        log(f"EASE over {len(keep)} movies: {timings['ease_s']:.1f}s")

    t0 = time.perf_counter()
    similar_lists, similar_source, user_knn, basis = _similar_lists(
        knn, ease_table, likes, popularity, item_ids, catalog, params, tie
    )
    timings["content_s"] = time.perf_counter() - t0
    timings["fit_s"] = time.perf_counter() - started
    return SimilarityModel(
        item_ids=item_ids.astype(np.int64),
        item_popularity=popularity,
        item_likes=likes,
        knn=user_knn,
        similar_lists=similar_lists,
        similar_source=similar_source,
        item_basis=basis,
        user_ids=user_ids.astype(np.int64),
        user_indptr=user_indptr,
        user_items=i_hist.astype(np.int32),
        user_liked=liked_hist.astype(bool),
        params=params,
        ease=ease_table,
        algorithm=algorithm,
        timings={k: round(v, 3) for k, v in timings.items()},
    )


def _similar_lists(
    knn: Neighbours,
    ease_table: Neighbours | None,
    likes: np.ndarray,
    popularity: np.ndarray,
    item_ids: np.ndarray,
    catalog: Catalog | None,
    params: ModelParams,
    tie: np.ndarray,
) -> tuple[Neighbours, np.ndarray, Neighbours, np.ndarray]:
    """(similar lists, their sources, the kNN table for user scores, each item's basis)."""
    n = len(item_ids)
    has_knn = np.diff(knn.indptr) > 0
    has_ease = np.diff(ease_table.indptr) > 0 if ease_table is not None else np.zeros(n, bool)
    basis = np.where(has_knn | has_ease, COLLABORATIVE, NONE).astype(np.uint8)
    source = np.where(has_knn, COLLABORATIVE, NONE).astype(np.uint8)
    if catalog is None or len(catalog) == 0:
        return knn, source, knn, basis

    from recommender.content import content_neighbours, movie_features

    features = movie_features(catalog)
    # rows for every model item: movies rated but missing from the catalog get empty rows
    rows = np.searchsorted(catalog.movie_ids, item_ids)
    rows_c = np.minimum(rows, len(catalog) - 1)
    in_catalog = catalog.movie_ids[rows_c] == item_ids
    select = sp.csr_matrix(
        (
            np.ones(int(in_catalog.sum()), np.float32),
            (np.flatnonzero(in_catalog), rows_c[in_catalog]),
        ),
        shape=(n, len(catalog)),
    )
    content = content_neighbours(select @ features, params.neighbours, popularity, tie)
    has_content = np.diff(content.indptr) > 0
    share = (
        np.minimum(likes / params.blend_likes, 1.0)
        if params.blend_likes > 0
        else (likes > 0).astype(np.float64)
    )
    share = np.where(has_knn, share, 0.0)
    similar_lists = blend_rows(knn, content, share, params.neighbours, tie)
    source = np.select(
        [has_knn & ((share >= 1.0) | ~has_content), has_knn, has_content],
        [COLLABORATIVE, BLEND, CONTENT],
        NONE,
    ).astype(np.uint8)
    # user scores: movies nobody liked (and outside EASE) lean on their content neighbours
    content_only = ~has_knn & ~has_ease & has_content
    basis = np.where(content_only, CONTENT, basis).astype(np.uint8)
    user_share = np.where(content_only, 0.0, 1.0)
    user_knn = blend_rows(knn, content, user_share, params.neighbours, tie)
    return similar_lists, source, user_knn, basis


def _progress_log(enabled: bool):
    if not enabled:
        return lambda message: None
    import sys

    return lambda message: print(f"  fit: {message}", file=sys.stderr, flush=True)


__all__ = [
    "ALGORITHMS",
    "ModelParams",
    "Recommendations",
    "SOURCES",
    "SimilarityModel",
    "choose_algorithm",
    "fit",
    "knn_table",
]
