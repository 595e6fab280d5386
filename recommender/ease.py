"""EASE (Steck 2019): the closed-form linear item-item model, dense, float32, in place.

``B = I - P / diag(P)`` with ``P = (X^T X + l2 I)^-1``, and ``B[i, i] = 0``. A user's score for
item ``j`` is ``sum_i x_i B[i, j]`` over the movies ``i`` they rated. On MovieLens it is the
strongest simple baseline there is, which is why it is part of the served model.

Cost: one ``n x n`` float32 matrix (the Gram matrix, factorised and inverted in place by LAPACK's
Cholesky ``potrf``/``potri``), ``n^3`` flops. That is 0.4 GB and 5-20 s for ml-latest-small's
9.7k movies on two shared cores; at 16k movies it is 1 GB and about a minute, and a 50k catalog
would need 10 GB. So the model uses EASE only while the catalog fits (``dense_max_items``) and
the item-kNN alone above that (docs/recommender.md, "Large catalogs": the sparse approximation
``sansa`` was measured and was worse than the kNN).

The served artifact must memory-map, so the dense ``B`` is pruned to each movie's top-N weights
by magnitude (negative weights matter in EASE: they push down what does not go together) and
stored as a :class:`~recommender.neighbours.Neighbours` table.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from recommender.neighbours import Neighbours, compact_indptr, top_k_rows

_BLOCK = 2048


def gram(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """Dense float32 ``X^T X + l2 I``, built one column block at a time (no sparse n x n)."""
    n = x.shape[1]
    xc = x.tocsc().astype(np.float32)
    xt = xc.T.tocsr()
    g = np.empty((n, n), dtype=np.float32)
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        g[:, start:stop] = (xt @ xc[:, start:stop]).toarray()
    g[np.diag_indices(n)] += np.float32(l2)
    return g


def weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """The dense EASE matrix ``B`` (float32, ``n x n``, zero diagonal) for a users x items ``x``."""
    n = x.shape[1]
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    g = gram(x, l2)
    # LAPACK is column-major: pass the F-ordered view of the (symmetric) C array, in place
    f = g.T
    c, info = lapack.spotrf(f, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Cholesky failed (info={info}); raise l2")
    p, info = lapack.spotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverse failed (info={info})")
    if not np.shares_memory(p, g):  # LAPACK copied after all: carry on with its result
        g = np.ascontiguousarray(p.T)
    # the F-upper triangle is the C-lower one (row >= col): mirror it, block by block
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        block = g[start:stop, start:stop]
        block[:] = np.tril(block) + np.tril(block, -1).T
        g[start:stop, stop:] = g[stop:, start:stop].T
    diag = np.diagonal(g).copy()
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        g[start:stop] /= -diag[None, :]
    g[np.diag_indices(n)] = 0.0
    return g


def prune(b: np.ndarray, top_n: int, tie: np.ndarray | None = None) -> Neighbours:
    """Each row's ``top_n`` weights by magnitude, as a neighbour table."""
    n = b.shape[0]

    def rows(start: int, stop: int) -> np.ndarray:
        return b[start:stop]

    return top_k_rows(n, n, rows, top_n, tie=tie, by_magnitude=True, keep_self=True)


def expand(table: Neighbours, keep: np.ndarray, n: int) -> Neighbours:
    """A table over the items ``keep`` (indices into ``0..n``) as a table over all ``n``."""
    lengths = np.zeros(n, dtype=np.int64)
    lengths[keep] = np.diff(table.indptr)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return Neighbours(compact_indptr(indptr), keep[table.indices].astype(np.int32), table.weights)


__all__ = ["expand", "gram", "prune", "weights"]
