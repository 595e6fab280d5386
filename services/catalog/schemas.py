"""The catalog's payloads (see ``services.platform.schemas`` for why they are Structs)."""

from __future__ import annotations

import msgspec


class Movie(msgspec.Struct, frozen=True, gc=False):
    """One movie, as the catalog serves it and every client reads it."""

    id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    imdb_id: str | None
    tmdb_id: int | None
    rating_count: int
    rating_mean: float | None
    tags: tuple[str, ...]


class Movies(msgspec.Struct, gc=False):
    """A batch lookup: the known movies in the order asked, and the ids not found."""

    items: list[Movie]
    missing: list[int]


class MovieList(msgspec.Struct, gc=False):
    items: list[Movie]


class SearchResult(msgspec.Struct, gc=False):
    items: list[Movie]
    total: int
    limit: int
    offset: int


class Genre(msgspec.Struct, frozen=True, gc=False):
    name: str
    count: int


class Genres(msgspec.Struct, gc=False):
    items: list[Genre]
