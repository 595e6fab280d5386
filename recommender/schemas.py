"""The recommender's payloads (see ``services.platform.schemas``)."""

from __future__ import annotations

import msgspec


class ScoredMovie(msgspec.Struct, frozen=True, gc=False):
    movie_id: int
    score: float


class Similar(msgspec.Struct, gc=False):
    """``GET /v1/similar/{id}``. ``source`` says where the list came from: the model, the cache
    (the model's answer stored earlier) or a fallback."""

    movie_id: int
    model_version: str
    items: list[ScoredMovie]
    source: str


class SimilarBatch(msgspec.Struct, gc=False):
    model_version: str
    results: list[Similar]
    missing: list[int]


class Recommendations(msgspec.Struct, gc=False, omit_defaults=True):
    """``GET /v1/users/{id}/recommendations`` and ``POST /v1/recommendations``."""

    model_version: str
    items: list[ScoredMovie]
    source: str
    user_id: int | None = None


class RecommendRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/recommendations``: movie ids, oldest first."""

    history: list[int]
    k: int = 10
