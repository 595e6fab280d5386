"""The catalog: movie details, batch lookups, search, popular lists and genres.

This class is the one home of the catalog's behaviour: its HTTP routes and the monolith's
in-process client both call it. The ~10k movies are small enough to hold in memory (lookups and
popular lists are dictionary and list reads), loaded at start from the store; search goes to the
store: SQLite FTS5 ranked by bm25, or PostgreSQL ``tsvector`` ranked alike (``pg_store.py``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Protocol

import orjson

from services.catalog.schemas import Genre, Movie, Movies, SearchResult
from services.catalog.store import KNOWN_GENRES, SqliteCatalogStore, build_catalog_db
from services.platform.errors import BadRequest, NotFound
from services.platform.settings import Settings

MAX_LIMIT = 100
MAX_IDS = 100
MAX_OFFSET = 10_000
MAX_QUERY = 200
MAX_TERMS = 16
# Search ranks by bm25 scaled up by popularity: relevance = bm25 * (1 + w * ln(1 + ratings)), so
# among similarly relevant titles the well-known film comes first ("star wars" → Episode IV).
POPULARITY_WEIGHT = 0.3
# Matches FTS5's unicode61 tokenizer: letters and digits make words, everything else separates.
_WORD = re.compile(r"[^\W_]+")


def _check_limit(limit: int, offset: int = 0) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_param")
    if not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise BadRequest(f"offset must be between 0 and {MAX_OFFSET}", code="invalid_param")


def search_words(q: str) -> list[str]:
    """The words of a query or title, lowercased, as FTS5's unicode61 tokenizer splits them."""
    return _WORD.findall(q.lower())


class CatalogStore(Protocol):
    """Where titles are searched: ``SqliteCatalogStore`` or ``PostgresCatalogStore``."""

    @property
    def is_open(self) -> bool: ...

    async def match(
        self, words: list[str], genre: str | None, limit: int, offset: int, weight: float
    ) -> tuple[list[int], int]: ...

    async def close(self) -> None: ...


async def open_catalog(settings: Settings) -> Catalog:
    """The catalog from PostgreSQL when ``database_url`` is set (built there from ``data_dir``
    by the first replica), else from the SQLite file ``catalog_db`` (built if the data changed)."""
    if settings.database_url:
        from services.catalog.pg_store import PostgresCatalogStore

        pg = await PostgresCatalogStore.open(settings.database_url, settings.data_dir)
        try:
            return Catalog(await pg.load_movies(), pg)
        except BaseException:
            await pg.close()
            raise
    await asyncio.to_thread(build_catalog_db, settings.data_dir, settings.catalog_db)
    sqlite = await asyncio.to_thread(SqliteCatalogStore, settings.catalog_db)
    return Catalog(await asyncio.to_thread(sqlite.load_movies), sqlite)


class Catalog:
    """The movies (rows of ``SERVED_COLUMNS``) in memory; search through ``store``."""

    def __init__(self, rows: Iterable[tuple], store: CatalogStore) -> None:
        self._store = store
        self._movies: dict[int, Movie] = {}
        for row in rows:
            movie_id, title, year, genres, imdb, tmdb, count, mean, tags = row
            self._movies[movie_id] = Movie(
                id=movie_id,
                title=title,
                year=year,
                genres=tuple(orjson.loads(genres)),
                imdb_id=imdb,
                tmdb_id=tmdb,
                rating_count=count,
                rating_mean=mean,
                tags=tuple(orjson.loads(tags)),
            )
        self._popular = sorted(self._movies.values(), key=_popularity)
        self._by_genre: dict[str, list[Movie]] = {}
        for movie in self._popular:
            for genre in movie.genres:
                self._by_genre.setdefault(genre, []).append(movie)
        for genre in KNOWN_GENRES:
            self._by_genre.setdefault(genre, [])
        self._genre_names = {g.lower(): g for g in self._by_genre}

    @property
    def store(self) -> CatalogStore:
        return self._store

    @property
    def is_open(self) -> bool:
        return self._store.is_open

    async def close(self) -> None:
        await self._store.close()

    def __len__(self) -> int:
        return len(self._movies)

    def movie(self, movie_id: int) -> Movie:
        movie = self._movies.get(movie_id)
        if movie is None:
            raise NotFound(f"no movie with id {movie_id}", code="unknown_movie")
        return movie

    def movies(self, ids: list[int]) -> Movies:
        """The known movies in the order asked, and the ids that are not known."""
        if len(ids) > MAX_IDS:
            raise BadRequest(f"at most {MAX_IDS} ids per request", code="invalid_param")
        found, missing = [], []
        for movie_id in ids:
            movie = self._movies.get(movie_id)
            if movie is None:
                missing.append(movie_id)
            else:
                found.append(movie)
        return Movies(found, missing)

    def genre(self, name: str | None) -> str | None:
        """The canonical name of a genre (case-insensitive), None for none; 400 if unknown."""
        if name is None or name == "":
            return None
        canonical = self._genre_names.get(name.strip().lower())
        if canonical is None:
            raise BadRequest(f"unknown genre {name!r}; see /v1/genres", code="unknown_genre")
        return canonical

    def popular(self, limit: int = 10, genre: str | None = None, offset: int = 0) -> list[Movie]:
        """Most rated first (then best rated, then id); ``offset`` pages through the ranking."""
        _check_limit(limit, offset)
        canonical = self.genre(genre)
        pool = self._popular if canonical is None else self._by_genre[canonical]
        return pool[offset : offset + limit]

    def genres(self) -> list[Genre]:
        return [Genre(g, len(movies)) for g, movies in sorted(self._by_genre.items()) if movies]

    async def search(
        self, q: str = "", genre: str | None = None, limit: int = 20, offset: int = 0
    ) -> SearchResult:
        """Titles matching every word of ``q`` as a prefix, by bm25 boosted by popularity.

        An empty ``q`` browses (the genre, or everything) by popularity.
        """
        q = q or ""
        if len(q) > MAX_QUERY:
            raise BadRequest(f"q is longer than {MAX_QUERY} characters", code="invalid_param")
        _check_limit(limit, offset)
        canonical = self.genre(genre)
        if not q.strip():
            pool = self._popular if canonical is None else self._by_genre[canonical]
            return SearchResult(pool[offset : offset + limit], len(pool), limit, offset)
        words = search_words(q)[:MAX_TERMS]
        if not words:
            return SearchResult([], 0, limit, offset)
        ids, total = await self._store.match(words, canonical, limit, offset, POPULARITY_WEIGHT)
        return SearchResult([self._movies[i] for i in ids], total, limit, offset)


def _popularity(movie: Movie) -> tuple[int, float, int]:
    return (-movie.rating_count, -(movie.rating_mean or 0.0), movie.id)
