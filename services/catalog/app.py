"""The catalog's HTTP transport: ``/v1`` routes over ``Catalog``, its store's lifecycle, its spec.

``setup_catalog(app)`` adds the catalog to any app: its own (``create_app``) or the monolith's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.catalog.catalog import (
    MAX_IDS,
    MAX_LIMIT,
    MAX_OFFSET,
    MAX_QUERY,
    Catalog,
    open_catalog,
)
from services.catalog.schemas import Genres, Movie, MovieList, Movies, SearchResult
from services.catalog.store import KNOWN_GENRES, build_catalog_db
from services.platform.app import (
    SETTINGS,
    add_openapi_paths,
    add_ready_check,
    add_route,
    create_base_app,
)
from services.platform.jsonutil import json_response
from services.platform.openapi import operation, path_param, query_param
from services.platform.params import path_id, query_ids, query_int
from services.platform.runner import run_service
from services.platform.settings import Settings, settings_or_exit

CATALOG = web.AppKey("catalog", Catalog)


async def catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    """Build the store if the data changed (off the event loop), open it, close it on shutdown."""
    app[CATALOG] = await open_catalog(app[SETTINGS])
    try:
        yield
    finally:
        await app[CATALOG].close()


def catalog_of(request: web.Request) -> Catalog:
    return request.app[CATALOG]


async def get_movie(request: web.Request) -> web.Response:
    movie_id = path_id(request, "movie_id")
    return json_response(catalog_of(request).movie(movie_id))


async def get_movies(request: web.Request) -> web.Response:
    ids = query_ids(request, "ids", maximum=MAX_IDS)
    return json_response(catalog_of(request).movies(ids))


async def search_movies(request: web.Request) -> web.Response:
    result = await catalog_of(request).search(
        request.query.get("q", ""),
        request.query.get("genre"),
        query_int(request, "limit", 20, minimum=1, maximum=MAX_LIMIT),
        query_int(request, "offset", 0, minimum=0, maximum=MAX_OFFSET),
    )
    return json_response(result)


async def popular_movies(request: web.Request) -> web.Response:
    items = catalog_of(request).popular(
        query_int(request, "limit", 20, minimum=1, maximum=MAX_LIMIT),
        request.query.get("genre"),
        query_int(request, "offset", 0, minimum=0, maximum=MAX_OFFSET),
    )
    return json_response(MovieList(items))


async def get_genres(request: web.Request) -> web.Response:
    return json_response(Genres(catalog_of(request).genres()))


def _limit(default: int) -> dict:
    return query_param(
        "limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default}
    )


_GENRE = query_param(
    "genre",
    {"type": "string", "enum": ["", *KNOWN_GENRES]},
    "a genre name from /v1/genres (empty: any genre)",
)

_OFFSET = query_param(
    "offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}
)

OPENAPI_PATHS = {
    "/v1/movies/search": {
        "get": operation(
            "search titles (word prefixes), best match first; empty q browses by popularity",
            returns=SearchResult,
            errors=(400, 503),
            parameters=[
                query_param("q", {"type": "string", "maxLength": MAX_QUERY}, "words to find"),
                _GENRE,
                _limit(20),
                _OFFSET,
            ],
        )
    },
    "/v1/movies/popular": {
        "get": operation(
            "most rated movies, optionally in one genre",
            returns=MovieList,
            parameters=[_limit(20), _GENRE, _OFFSET],
        )
    },
    "/v1/movies/{movie_id}": {
        "get": operation(
            "one movie",
            returns=Movie,
            parameters=[path_param("movie_id", "MovieLens id")],
            errors=(400, 404),
        )
    },
    "/v1/movies": {
        "get": operation(
            "several movies in the order asked, plus the ids not found",
            returns=Movies,
            parameters=[
                query_param(
                    "ids",
                    # Up to 100 ids of at most 9 digits (ids are below 2**31).
                    {"type": "string", "pattern": r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8}){0,99}$"},
                    f"comma-separated ids, at most {MAX_IDS}",
                    required=True,
                )
            ],
        )
    },
    "/v1/genres": {
        "get": operation("every genre with its number of movies", returns=Genres, errors=())
    },
}


def setup_catalog(app: web.Application) -> None:
    app.cleanup_ctx.append(catalog_ctx)
    add_ready_check(app, "catalog", lambda: CATALOG in app and app[CATALOG].is_open)
    # The fixed paths come before /v1/movies/{movie_id}, which would otherwise match "search".
    add_route(app, "GET", "/v1/movies/search", search_movies)
    add_route(app, "GET", "/v1/movies/popular", popular_movies)
    add_route(app, "GET", "/v1/movies/{movie_id}", get_movie)
    add_route(app, "GET", "/v1/movies", get_movies)
    add_route(app, "GET", "/v1/genres", get_genres)
    add_openapi_paths(app, OPENAPI_PATHS)


def create_app(settings: Settings) -> web.Application:
    app = create_base_app(settings, "catalog")
    setup_catalog(app)
    return app


def main() -> None:
    settings = settings_or_exit()
    # Build once before any worker forks, so N workers don't all build it at once (PostgreSQL:
    # the first replica builds it under an advisory lock).
    if not settings.database_url:
        build_catalog_db(settings.data_dir, settings.catalog_db)
    run_service(create_app, settings, "catalog", settings.catalog_port)
