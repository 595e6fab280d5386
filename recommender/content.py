"""Content neighbours: movies that read alike, for movies the ratings cannot place.

A movie nobody has rated (or liked) has no collaborative neighbours, so ``similar`` had nothing
to say for a quarter of the catalog. What we do know about every movie is its genres, the tags
users gave it (``tags.csv``), its title words and its year. Each of those fields becomes a
TF-IDF block (rare genres and tags weigh more than "Drama"), each block is scaled to unit length
times its weight, and the similarity of two movies is the cosine of the joined vectors.

Why these choices: TF-IDF + cosine is the standard, well-understood baseline for short
descriptions, and it is what scikit-learn does in a few lines. The field weights were measured
(docs/recommender.md, "Similar movies for every movie"): on well-rated movies whose ratings were
hidden, the content neighbours' overlap@10 with their collaborative neighbours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.preprocessing import normalize

from recommender.data import Catalog
from recommender.neighbours import Neighbours, top_k_rows

_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_WORD = re.compile(r"[a-z0-9]+")
_TITLE_STOP = ENGLISH_STOP_WORDS | {"ii", "iii", "2", "3", "4", "part", "movie", "film"}


@dataclass(frozen=True)
class ContentWeights:
    """How much each field counts in the cosine (relative; only the ratios matter)."""

    genres: float = 1.0
    tags: float = 1.0
    title: float = 0.5
    year: float = 1.0


def _identity(tokens: list[str]) -> list[str]:
    return tokens


def _title_words(title: str) -> list[str]:
    words = _WORD.findall(_YEAR.sub("", title).lower())
    return [w for w in words if w not in _TITLE_STOP and len(w) > 1]


def _year_tokens(title: str) -> list[str]:
    """Year, its neighbours and its decade: films two years apart share most tokens."""
    match = _YEAR.search(title.strip())
    if not match:
        return []
    year = int(match.group(1))
    return [f"y{year - 1}", f"y{year}", f"y{year + 1}", f"d{year // 10}"]


def _tag_tokens(tags: list[str]) -> list[str]:
    return [t.strip().lower() for t in tags if t.strip()]


def _block(docs: list[list[str]], min_df: int) -> sp.csr_matrix | None:
    if not any(docs):
        return None
    vectorizer = TfidfVectorizer(
        analyzer=_identity, min_df=min_df, sublinear_tf=True, dtype=np.float32
    )
    try:
        return vectorizer.fit_transform(docs).tocsr()
    except ValueError:  # every token below min_df
        return None


def movie_features(
    catalog: Catalog,
    weights: ContentWeights = ContentWeights(),  # noqa: B008 - frozen dataclass
) -> sp.csr_matrix:
    """One L2-normalised row per catalog movie (rows aligned with ``catalog.movie_ids``)."""
    fields = [
        (weights.genres, [list(g) for g in catalog.genres], 1),
        (weights.tags, [_tag_tokens(t) for t in catalog.tags] or [], 1),
        (weights.title, [_title_words(t) for t in catalog.titles], 2),
        (weights.year, [_year_tokens(t) for t in catalog.titles], 1),
    ]
    blocks = []
    for weight, docs, min_df in fields:
        if weight <= 0 or len(docs) != len(catalog):
            continue
        block = _block(docs, min_df)
        if block is not None:
            blocks.append(normalize(block) * np.float32(weight))
    if not blocks:
        return sp.csr_matrix((len(catalog), 1), dtype=np.float32)
    return normalize(sp.hstack(blocks, format="csr", dtype=np.float32))


def popularity_prior(popularity: np.ndarray) -> np.ndarray:
    """``log(2 + ratings) / log(2 + max ratings)``: in (0, 1], rises slowly with popularity.

    Two movies that read alike are not equally good answers: the collaborative lists a reader
    trusts are full of well-known films, and content alone ranks an unseen obscure film like a
    classic. Multiplying the cosine by this prior tripled the overlap of content lists with the
    collaborative ones (docs/recommender.md); movies nobody rated keep a small weight.
    """
    pop = np.asarray(popularity, dtype=np.float64)
    top = np.log(2.0 + (pop.max() if pop.size else 0.0))
    return (np.log(2.0 + pop) / top).astype(np.float32)


def content_neighbours(
    features: sp.csr_matrix,
    k: int,
    popularity: np.ndarray,
    tie: np.ndarray,
    *,
    block_bytes: int = 64 << 20,
) -> Neighbours:
    """Each row's top ``k`` neighbours by cosine x :func:`popularity_prior` of the neighbour;
    exact ties go to the more popular movie.

    Common tokens (genres, decades) make the product dense, rare ones (tags, title words) keep
    it sparse; so the common columns go through a dense BLAS product and the rest through a
    sparse one: about 10x faster than one sparse product that fills in.
    """
    features = features.tocsr().astype(np.float32)
    n = features.shape[0]
    df = np.bincount(features.indices, minlength=features.shape[1])
    common = np.flatnonzero(df > max(n // 200, 1))[:1024]
    rare = np.setdiff1d(np.arange(features.shape[1]), common)
    dense = np.ascontiguousarray(features[:, common].toarray())
    sparse = features[:, rare].tocsr()
    sparse_t = sparse.T.tocsc()

    prior = popularity_prior(popularity)

    def product(start: int, stop: int) -> np.ndarray:
        block = dense[start:stop] @ dense.T
        block += (sparse[start:stop] @ sparse_t).toarray()
        block *= prior[None, :]
        return block

    return top_k_rows(n, n, product, k, tie=tie, block_bytes=block_bytes)


__all__ = ["ContentWeights", "content_neighbours", "movie_features", "popularity_prior"]
