"""Templates autoescape: a movie title and a tag holding ``<script>`` (from the data itself), and
script in the query string or the path, are shown as text on every page, never run."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import replace
from tests.security.conftest import browser, get_page, log_in

TITLE = "<script>alert(1)</script>"
TAG = "<script>x</script>"
MOVIES = 12
USERS = 30


def write_data(data_dir: Path) -> None:
    """A tiny MovieLens-shaped data set whose movie 1 has a hostile title and tag."""
    data_dir.mkdir()
    movies = ["movieId,title,genres", f'1,"{TITLE} (1999)",Comedy|Drama']
    movies += [f"{i},Plain Movie {i} ({1990 + i}),Comedy" for i in range(2, MOVIES + 1)]
    (data_dir / "movies.csv").write_text("\r\n".join(movies) + "\r\n")
    links = ["movieId,imdbId,tmdbId"] + [f"{i},{1000 + i:07d},{i}" for i in range(1, MOVIES + 1)]
    (data_dir / "links.csv").write_text("\r\n".join(links) + "\r\n")
    tags = ["userId,movieId,tag,timestamp", f'1,1,"{TAG}",1000000000', "2,1,funny,1000000001"]
    (data_dir / "tags.csv").write_text("\r\n".join(tags) + "\r\n")
    ratings = ["userId,movieId,rating,timestamp"]
    t = 1_000_000_000
    for user in range(1, USERS + 1):
        for offset in range(5):  # each user likes 5 neighbouring movies, movie 1 by many
            movie = 1 + (user + offset) % MOVIES
            t += 1
            ratings.append(f"{user},{movie},{4.0 + (offset % 2) / 2},{t}")
    (data_dir / "ratings.csv").write_text("\r\n".join(ratings) + "\r\n")


@pytest.fixture
async def hostile_base(settings, serve_app, tmp_path: Path) -> str:
    """The monolith on the crafted data: its own catalog store and a model trained on it."""
    from recommender.data import data_hash, load_ratings
    from recommender.model import fit
    from recommender.registry import ModelRegistry
    from services.catalog.store import build_catalog_db
    from web_server.app import create_app

    data_dir = tmp_path / "data"
    write_data(data_dir)
    catalog_db = tmp_path / "catalog.sqlite3"
    build_catalog_db(data_dir, catalog_db)
    models = tmp_path / "models"
    started = time.perf_counter()
    ratings = data_dir / "ratings.csv"
    ModelRegistry(models).register(
        fit(load_ratings(ratings)),
        data_hash=data_hash(ratings),
        metrics={},
        trained_seconds=time.perf_counter() - started,
    )
    crafted = replace(
        settings, mode="monolith", data_dir=data_dir, catalog_db=catalog_db, model_dir=models
    )
    return await serve_app(create_app(crafted))


def assert_inert(page: str) -> None:
    assert "<script>alert" not in page and "<script>x" not in page
    assert "<script" not in page.lower(), "a script tag reached the page"


async def test_a_hostile_title_and_tag_are_shown_as_text(hostile_base, http):
    async with http.get(f"{hostile_base}/api/pages/movies/1") as resp:
        movie = (await resp.json())["movie"]
    assert movie["title"] == TITLE and TAG in movie["tags"]  # the data really holds them

    async with browser() as session:
        page = await get_page(session, f"{hostile_base}/movies/1")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the title, as text
        assert "&lt;script&gt;x&lt;/script&gt;" in page  # the tag, as text
        assert_inert(page)
        # where it is listed on other pages: similar rows, home rows, search results
        others = [
            await get_page(session, f"{hostile_base}{path}")
            for path in (
                "/",
                "/search?q=alert",
                "/search?genre=Drama",
                *(f"/movies/{i}" for i in range(2, 6)),
            )
        ]
        assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in p for p in others[3:])
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in others[1]
        for other in others:
            assert_inert(other)
        # logged in, the personal rows and the plan box render it safely too
        await log_in(session, hostile_base, 3)
        assert_inert(await get_page(session, f"{hostile_base}/"))
        assert_inert(await get_page(session, f"{hostile_base}/movies/1"))


async def test_script_in_the_query_and_path_is_escaped(hostile_base):
    attack = "<script>alert(2)</script>"
    async with browser() as session:
        page = await get_page(session, f"{hostile_base}/search?q={quote(attack)}")
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
        assert_inert(page)
        for path in (f"/movies/{quote(attack)}", f"/login?next=/{quote(attack)}"):
            async with session.get(f"{hostile_base}{path}") as resp:
                assert resp.status in (200, 400, 404)
                assert_inert(await resp.text())


async def test_pages_forbid_framing_sniffing_and_foreign_content(web_base):
    """Issue 18.8: every HTML page (rendered or streamed, errors too) says what it may load."""
    async with browser() as session:
        for path in ("/", "/movies/1", "/search?q=toy", "/login", "/no/such/page"):
            async with session.get(web_base + path) as resp:
                await resp.read()
                headers = resp.headers
            assert headers["X-Frame-Options"] == "DENY", path
            assert headers["X-Content-Type-Options"] == "nosniff", path
            policy = headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy, path
            assert "unsafe-eval" not in policy and "script-src 'self'" in policy, path


def test_no_template_carries_inline_style_or_script() -> None:
    """The content policy allows our own stylesheet only: an inline <style> or <script> in a
    template would be refused by every browser (the batch pages' tables lost their layout)."""
    from services.platform.settings import PROJECT_ROOT

    for template in (PROJECT_ROOT / "templates").glob("*.html"):
        text = template.read_text().lower()
        assert "<style" not in text and "<script" not in text, template.name
