"""The catalog over real HTTP: movie details, batches, search, popular lists, genres, bad input."""

from __future__ import annotations

import aiohttp
import pytest

from services.catalog.app import create_app
from services.platform.settings import Settings
from tests.services.conftest import Serve
from tests.services.helpers import router_routes
from tests.support import get_json

MATRIX = 2571


async def test_movie_by_id_has_details_links_ratings_and_tags(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    status, movie = await get_json(http, f"{catalog_url}/v1/movies/1")
    assert status == 200
    assert movie["id"] == 1
    assert (movie["title"], movie["year"]) == ("Toy Story", 1995)
    assert "Animation" in movie["genres"]
    assert (movie["imdb_id"], movie["tmdb_id"]) == ("tt0114709", 862)
    assert movie["rating_count"] > 0
    assert 0.5 <= movie["rating_mean"] <= 5.0
    assert isinstance(movie["tags"], list) and "pixar" in movie["tags"]


async def test_titles_with_trailing_article_read_naturally(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    _, movie = await get_json(http, f"{catalog_url}/v1/movies/{MATRIX}")
    assert (movie["title"], movie["year"]) == ("The Matrix", 1999)


async def test_movie_without_year_or_genres_has_nulls_and_empty_list(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    _, movie = await get_json(http, f"{catalog_url}/v1/movies/176601")  # "Black Mirror"
    assert (movie["title"], movie["year"], movie["genres"]) == ("Black Mirror", None, [])


async def test_batch_keeps_order_and_lists_missing(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}/v1/movies?ids=3,999999,1,2")
    assert status == 200
    assert [m["id"] for m in body["items"]] == [3, 1, 2]
    assert body["missing"] == [999999]


async def test_search_matrix_finds_the_matrix_first(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}/v1/movies/search", params={"q": "matrix"})
    assert status == 200
    first = body["items"][0]
    assert (first["title"], first["year"]) == ("The Matrix", 1999)
    assert body["total"] >= 3
    assert (body["limit"], body["offset"]) == (20, 0)


@pytest.mark.parametrize(
    ("q", "title"),
    [
        ("star wars", "Star Wars: Episode IV - A New Hope"),
        ("toy", "Toy Story"),
        ("godfather", "The Godfather"),
        ("amélie", "Amelie"),  # diacritics are ignored: "amélie" finds "Amelie" too
    ],
)
async def test_search_ranks_the_best_known_whole_word_match_first(
    http: aiohttp.ClientSession, catalog_url: str, q: str, title: str
) -> None:
    _, body = await get_json(http, f"{catalog_url}/v1/movies/search", params={"q": q})
    assert body["items"][0]["title"].startswith(title)


async def test_search_matches_word_prefixes(http: aiohttp.ClientSession, catalog_url: str) -> None:
    _, body = await get_json(http, f"{catalog_url}/v1/movies/search", params={"q": "matri"})
    assert body["items"][0]["id"] == MATRIX


async def test_search_pages_with_limit_and_offset(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    url = f"{catalog_url}/v1/movies/search"
    _, everything = await get_json(http, url, params={"q": "star", "limit": "10"})
    _, second = await get_json(http, url, params={"q": "star", "limit": "5", "offset": "5"})
    assert [m["id"] for m in second["items"]] == [m["id"] for m in everything["items"][5:10]]
    assert second["total"] == everything["total"]


async def test_search_filters_by_genre(http: aiohttp.ClientSession, catalog_url: str) -> None:
    url = f"{catalog_url}/v1/movies/search"
    _, all_stars = await get_json(http, url, params={"q": "star", "limit": "100"})
    _, animated = await get_json(
        http, url, params={"q": "star", "genre": "Animation", "limit": "100"}
    )
    assert 0 < animated["total"] < all_stars["total"]
    assert all("Animation" in m["genres"] for m in animated["items"])


async def test_search_without_query_browses_genre_by_popularity(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    _, body = await get_json(http, f"{catalog_url}/v1/movies/search", params={"genre": "Western"})
    counts = [m["rating_count"] for m in body["items"]]
    assert body["total"] > len(body["items"]) > 0
    assert all("Western" in m["genres"] for m in body["items"])
    assert counts == sorted(counts, reverse=True)


async def test_search_with_only_punctuation_finds_nothing(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}/v1/movies/search", params={"q": '"*:)('})
    assert (status, body["items"], body["total"]) == (200, [], 0)


async def test_popular_is_ordered_by_rating_count(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}/v1/movies/popular?limit=50")
    counts = [m["rating_count"] for m in body["items"]]
    assert status == 200 and len(counts) == 50
    assert counts == sorted(counts, reverse=True)
    assert body["items"][0]["title"] == "Forrest Gump"


async def test_popular_in_a_genre_only_lists_that_genre(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    _, body = await get_json(http, f"{catalog_url}/v1/movies/popular?limit=10&genre=Animation")
    assert len(body["items"]) == 10
    assert all("Animation" in m["genres"] for m in body["items"])


async def test_genres_lists_names_with_counts(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}/v1/genres")
    genres = {g["name"]: g["count"] for g in body["items"]}
    assert status == 200
    assert genres["Drama"] > genres["Film-Noir"] > 0
    assert "(no genres listed)" not in genres


@pytest.mark.parametrize("movie_id", ["abc", "0", "-1", "99999999999", "1.5"])
async def test_bad_movie_id_is_400_invalid_id(
    http: aiohttp.ClientSession, catalog_url: str, movie_id: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}/v1/movies/{movie_id}")
    assert (status, body["error"]["code"]) == (400, "invalid_id")


async def test_unknown_movie_is_404_unknown_movie(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}/v1/movies/999999")
    assert (status, body["error"]["code"]) == (404, "unknown_movie")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/movies/search?q=x&limit=0",
        "/v1/movies/search?q=x&limit=1000",
        "/v1/movies/search?q=x&limit=ten",
        "/v1/movies/search?q=x&offset=-1",
        "/v1/movies/popular?limit=0",
        "/v1/movies/popular?limit=1000",
        "/v1/movies?ids=",
        "/v1/movies?ids=1,abc",
        "/v1/movies?ids=" + ",".join(str(i) for i in range(1, 102)),
    ],
)
async def test_bad_query_parameters_are_400(
    http: aiohttp.ClientSession, catalog_url: str, path: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}{path}")
    assert status == 400
    assert body["error"]["message"]


async def test_too_long_query_is_400(http: aiohttp.ClientSession, catalog_url: str) -> None:
    status, _ = await get_json(http, f"{catalog_url}/v1/movies/search", params={"q": "a" * 201})
    assert status == 400


@pytest.mark.parametrize(
    "path", ["/v1/movies/search?q=star&genre=Nope", "/v1/movies/popular?genre=Nope"]
)
async def test_unknown_genre_is_400_unknown_genre(
    http: aiohttp.ClientSession, catalog_url: str, path: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}{path}")
    assert (status, body["error"]["code"]) == (400, "unknown_genre")


async def test_healthz_is_ok(http: aiohttp.ClientSession, catalog_url: str) -> None:
    status, body = await get_json(http, f"{catalog_url}/healthz")
    assert (status, body["service"]) == (200, "catalog")


async def test_readyz_reports_the_catalog_loaded(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    status, body = await get_json(http, f"{catalog_url}/readyz")
    assert (status, body["checks"]) == (200, {"catalog": True})


async def test_metrics_count_requests_by_route(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    await get_json(http, f"{catalog_url}/v1/movies/1")
    async with http.get(f"{catalog_url}/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200
    assert 'route="/v1/movies/{movie_id}"' in text


async def test_openapi_documents_the_v1_routes(
    http: aiohttp.ClientSession, catalog_url: str
) -> None:
    status, spec = await get_json(http, f"{catalog_url}/openapi.json")
    assert status == 200
    assert {"/v1/movies/{movie_id}", "/v1/movies", "/v1/movies/search"} <= set(spec["paths"])


async def test_every_route_is_in_openapi_with_its_path_parameters(
    http: aiohttp.ClientSession, settings: Settings, serve: Serve
) -> None:
    server = await serve(create_app(settings))
    _, spec = await get_json(http, str(server.make_url("/openapi.json")))
    for method, path in router_routes(server.app):
        operation = spec["paths"][path][method]
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == {s[1:-1] for s in path.split("/") if s.startswith("{")}, path
