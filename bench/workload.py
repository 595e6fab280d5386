"""Request paths for the load generators: movie ids drawn Zipf-like over popularity rank.

Real traffic concentrates on popular films, and that is what decides cache hit rates; so rank 1
is the most-rated movie of the bundled data, and ``p(rank) ~ 1 / rank ** s``. Deterministic for
a seed, so two runs (and ours vs the baseline) replay the very same sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def movies_by_popularity(ratings_csv: Path) -> np.ndarray:
    """Movie ids of the ratings file, most-rated first (ties by id)."""
    ids = np.loadtxt(ratings_csv, delimiter=",", skiprows=1, usecols=1, dtype=np.int64)
    counts = np.bincount(ids)
    present = np.flatnonzero(counts)
    return present[np.lexsort((present, -counts[present]))]


def zipf_ids(ranked: np.ndarray, n: int, s: float = 1.0, seed: int = 7) -> np.ndarray:
    """``n`` ids drawn from ``ranked`` (popular first) with Zipf exponent ``s``."""
    weights = 1.0 / np.arange(1, len(ranked) + 1, dtype=np.float64) ** s
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    rng = np.random.default_rng(seed)
    return ranked[np.searchsorted(cdf, rng.random(n), side="right")]


def unique_keys(ranked: np.ndarray, n: int, ks: range, seed: int = 11) -> list[tuple[int, int]]:
    """``n`` distinct (movie id, k) pairs in random order: every request a cache miss."""
    rng = np.random.default_rng(seed)
    total = len(ranked) * len(ks)
    picks = rng.choice(total, size=min(n, total), replace=False)
    ids, k_index = np.divmod(picks, len(ks))
    return [(int(ranked[i]), ks[j]) for i, j in zip(ids, k_index, strict=True)]
