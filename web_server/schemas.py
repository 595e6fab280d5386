"""The web server's own payload: the composed movie page as JSON (``/api/pages/movies/{id}``)."""

from __future__ import annotations

import msgspec

from services.catalog.schemas import Movie
from services.subscription.schemas import Plan, Subscription


class PageItem(msgspec.Struct, frozen=True, gc=False):
    """A movie in the similar row: its card's facts and the recommender's score (None when the
    row is the popular-in-genre fallback)."""

    movie_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    score: float | None


class SimilarRow(msgspec.Struct, frozen=True, gc=False):
    """``source``: the recommender's (model, cache, collaborative, content, blend) or
    ``fallback`` (popular movies in the movie's genre). ``model_version``: the version that made
    the row (None for the fallback); it keys the row's cached HTML, so two arms serving two
    versions never share a row, and a tracked row's token records it."""

    items: tuple[PageItem, ...]
    source: str
    model_version: str | None = None


class Page(msgspec.Struct, gc=False):
    movie: Movie
    plan: Subscription
    similar: SimilarRow
    degraded: list[str]
    timings: dict[str, float]


class PlanBox(msgspec.Struct, frozen=True, gc=False):
    """What the plan box shows: the viewer's subscription and the plans to choose from."""

    subscription: Subscription
    choices: tuple[Plan, ...]
