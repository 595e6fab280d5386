"""The popularity model: the same most-rated movies for every question.

A deliberately weak but valid model version, the baseline an experiment's candidate should beat
(issue 16's replayed users: "the current model and a deliberately weaker one"). It is a
:class:`~recommender.model.SimilarityModel` like any other - fitted by ``fit`` with
``algorithm="popularity"``, stored, signed, memory-mapped and hot-reloaded the same way - whose
tables say only "popular":

* every movie's similar list is the ``neighbours`` most-rated movies other than itself, scored
  ``popularity / max popularity`` (``similar_source`` "popularity");
* there is no kNN and no EASE, so a history's scores are all 0.0 and ``top_items``' tie rule
  (more popular first, then lower index) ranks the most-rated movies the person has not rated:
  exactly the ``popularity`` peer of the offline evaluation.
"""

from __future__ import annotations

import numpy as np

from recommender.neighbours import Neighbours


def popular_order(tie: np.ndarray) -> np.ndarray:
    """Item indices, most popular first: the model's tie score (``_popularity_rank``: more
    popular is higher, equal popularity by lower index) is the popularity order itself."""
    return np.argsort(-np.asarray(tie, dtype=np.float64), kind="stable")


def popular_lists(popularity: np.ndarray, tie: np.ndarray, k: int) -> Neighbours:
    """Each item's ``k`` most popular other items (fewer when the catalog is smaller).

    Built without a loop over items: every row is the top ``k + 1`` minus the row's own item
    (or minus the last one, for items outside the top), so the table costs n x k entries.
    """
    n = len(popularity)
    k = max(0, min(k, n - 1))
    if n == 0 or k == 0:
        return Neighbours.empty(n)
    head = popular_order(tie)[: k + 1]
    top = float(max(int(popularity.max()), 1))
    weights = (popularity[head] / top).astype(np.float32)
    idx = np.broadcast_to(head, (n, len(head))).copy()
    w = np.broadcast_to(weights, (n, len(head))).copy()
    own = idx == np.arange(n)[:, None]
    own[~own.any(axis=1), -1] = True  # not in the head: drop the last one instead
    idx, w = idx[~own].reshape(n, k), w[~own].reshape(n, k)
    return Neighbours.from_padded(idx, w)
