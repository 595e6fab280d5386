"""Neighbour tables: each item's top-K other items with a weight, as three flat arrays.

Every item-item table of the model (the collaborative kNN, the pruned EASE weights, the content
neighbours, the served ``similar`` lists) has this one layout: a CSR matrix whose row ``i`` holds
item ``i``'s neighbours sorted by weight, best first. Flat arrays memory-map, a row is a slice,
and the whole table is a scipy CSR matrix without a copy, so scoring a batch of histories is one
sparse product.

Rows are chosen block by block (``top_k_rows``) so the dense ``n x n`` matrix never exists.
Exact ties are broken by a caller-given ``tie`` score (the item's popularity), never by index
order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True, eq=False)
class Neighbours:
    """Row ``i`` = ``indices[indptr[i]:indptr[i + 1]]`` with ``weights``, best first."""

    indptr: np.ndarray  # (n + 1,) int32 (int64 past 2^31 entries)
    indices: np.ndarray  # (nnz,) int32
    weights: np.ndarray  # (nnz,) float32

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.weights.nbytes

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = int(self.indptr[i]), int(self.indptr[i + 1])
        return np.asarray(self.indices[start:stop]), np.asarray(self.weights[start:stop])

    def matrix(self, n_cols: int | None = None) -> sp.csr_matrix:
        """The table as an ``n x n_cols`` CSR matrix sharing the arrays (no copy)."""
        n = self.n_rows
        m = sp.csr_matrix((n, n_cols if n_cols is not None else n), dtype=np.float32)
        m.data, m.indices, m.indptr = self.weights, self.indices, self.indptr
        return m

    @classmethod
    def empty(cls, n: int) -> Neighbours:
        return cls(np.zeros(n + 1, np.int32), np.empty(0, np.int32), np.empty(0, np.float32))

    @classmethod
    def from_padded(cls, idx: np.ndarray, weights: np.ndarray) -> Neighbours:
        """From ``(n, K)`` arrays where ``idx < 0`` marks padding."""
        valid = idx >= 0
        indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(valid.sum(axis=1), out=indptr[1:])
        return cls(
            compact_indptr(indptr), idx[valid].astype(np.int32), weights[valid].astype(np.float32)
        )


TIE_BITS = 24  # tie ranks are 24-bit integers below the score's bits in one int64 sort key


def _tie_ranks(tie: np.ndarray | None, n: int) -> np.ndarray:
    """``tie`` (higher wins) as distinct integers 0..n-1, or index order when None."""
    if tie is None:
        order = np.arange(n)[::-1]  # lower index wins
    else:
        order = np.lexsort((-np.arange(n), np.asarray(tie, dtype=np.float64)))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    return ranks


def top_k_rows(
    n_rows: int,
    n_cols: int,
    block_product: Callable[[int, int], np.ndarray],
    k: int,
    *,
    tie: np.ndarray | None = None,
    by_magnitude: bool = False,
    keep_self: bool = False,
    block_bytes: int = 64 << 20,
    n_jobs: int | None = None,
) -> Neighbours:
    """Keep the top ``k`` of every row of a matrix computed block by block.

    ``block_product(start, stop)`` returns the dense float32 rows ``[start, stop)``. Rows are
    ranked by weight (or by ``|weight|`` with ``by_magnitude``, for EASE whose negative weights
    matter), exact ties by ``tie`` (higher first). Zero weights are dropped, and so are negative
    ones unless ``by_magnitude``. Blocks run on a small thread pool: numpy and scipy release the
    GIL in the heavy parts.

    Ties are exact, not approximate: a non-negative float32's bits, read as an integer, sort
    like the float, so ``bits << 24 | tie rank`` is one int64 key that orders by weight, then
    by the tie-breaker, with one partition and one sort per block.
    """
    if n_cols >= 1 << TIE_BITS:
        raise ValueError(f"at most {1 << TIE_BITS} columns")
    block = max(1, min(max(n_rows, 1), block_bytes // max(1, n_cols * 12)))
    starts = list(range(0, n_rows, block))
    parts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(starts)
    ranks = _tie_ranks(tie, n_cols)

    def run(j: int) -> None:
        start = starts[j]
        stop = min(start + block, n_rows)
        dense = np.ascontiguousarray(block_product(start, stop), dtype=np.float32)
        if not keep_self:
            rows = np.arange(stop - start)
            dense[rows, rows + start] = 0.0
        magnitude = np.abs(dense) if by_magnitude else np.maximum(dense, 0.0)
        key = magnitude.view(np.int32).astype(np.int64)
        del magnitude
        key <<= TIE_BITS
        key |= ranks[None, :]
        kk = min(k, n_cols)
        if kk < n_cols:
            top = np.argpartition(key, n_cols - kk, axis=1)[:, n_cols - kk :]
        else:
            top = np.broadcast_to(np.arange(n_cols), (stop - start, n_cols)).copy()
        top_key = np.take_along_axis(key, top, axis=1)
        del key
        order = np.argsort(-top_key, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        weights = np.take_along_axis(dense, top, axis=1)
        top[(np.take_along_axis(top_key, order, axis=1) >> TIE_BITS) <= 0] = -1  # zero weights
        parts[j] = (top.astype(np.int32), weights.astype(np.float32))

    jobs = n_jobs or min(2, os.cpu_count() or 1)
    if jobs > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(run, range(len(starts))))
    else:
        for j in range(len(starts)):
            run(j)
    if not parts:
        return Neighbours.empty(n_rows)
    idx = np.concatenate([p[0] for p in parts if p is not None])
    weights = np.concatenate([p[1] for p in parts if p is not None])
    parts.clear()
    return Neighbours.from_padded(idx, weights)


def blend_rows(
    collaborative: Neighbours,
    content: Neighbours,
    collaborative_share: np.ndarray,
    k: int,
    tie: np.ndarray,
) -> Neighbours:
    """Per item, ``share * collaborative + (1 - share) * content``, each row scaled to max 1.

    Rows with share 1 (or no content row) are the collaborative row as it is, scores unchanged;
    share 0 (or no collaborative row) is the content row. In between, both rows are scaled to
    their best weight first: the two scores live on different scales (a shrunk cosine of
    co-ratings, a cosine of descriptions), and a blend should mix rankings, not units.
    """
    n = collaborative.n_rows
    share = np.asarray(collaborative_share, dtype=np.float64)
    c_len, t_len = np.diff(collaborative.indptr), np.diff(content.indptr)
    use_c = (share >= 1.0) | (t_len == 0)
    use_t = ~use_c & ((share <= 0.0) | (c_len == 0))
    mixed = np.flatnonzero(~use_c & ~use_t)
    tie = np.asarray(tie, dtype=np.float64)
    blended: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i in mixed.tolist():
        c_idx, c_w = collaborative.row(i)
        t_idx, t_w = content.row(i)
        cand = np.union1d(c_idx, t_idx)
        score = np.zeros(len(cand), dtype=np.float64)
        score[np.searchsorted(cand, c_idx)] += share[i] * c_w / max(float(c_w[0]), 1e-12)
        score[np.searchsorted(cand, t_idx)] += (1 - share[i]) * t_w / max(float(t_w[0]), 1e-12)
        score32 = score.astype(np.float32)  # rank by the stored value: ties are real ties
        order = np.lexsort((cand, -tie[cand], -score32))[:k]
        blended[i] = (cand[order].astype(np.int32), score32[order])
    lengths = np.where(use_c, np.minimum(c_len, k), np.where(use_t, np.minimum(t_len, k), 0))
    for i, (idx, _) in blended.items():
        lengths[i] = len(idx)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    weights = np.empty(int(indptr[-1]), dtype=np.float32)
    for table, rows in ((collaborative, np.flatnonzero(use_c)), (content, np.flatnonzero(use_t))):
        src = _gather(table.indptr, rows, lengths[rows])
        dst = _gather(indptr, rows, lengths[rows])
        indices[dst] = table.indices[src]
        weights[dst] = table.weights[src]
    for i, (idx, w) in blended.items():
        indices[indptr[i] : indptr[i + 1]] = idx
        weights[indptr[i] : indptr[i + 1]] = w
    return Neighbours(compact_indptr(indptr), indices, weights)


def _gather(indptr: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat positions of the first ``lengths[j]`` entries of each row ``rows[j]``."""
    starts = np.asarray(indptr, dtype=np.int64)[rows]
    total = int(lengths.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


def compact_indptr(indptr: np.ndarray) -> np.ndarray:
    """int32 row pointers when they fit, so scipy products never convert them per call."""
    return indptr.astype(np.int32) if indptr[-1] < np.iinfo(np.int32).max else indptr


__all__ = ["Neighbours", "blend_rows", "top_k_rows"]
