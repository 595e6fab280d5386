"""Streamed pages (first paint not held back by slow fragments) and "Because you watched X"."""

from __future__ import annotations

import asyncio

from yarl import URL

from services.platform import auth
from tests.support import GENEROUS
from tests.web import stubs
from tests.web.conftest import stub_settings
from tests.web.helpers import browser, timed_get


async def read_streamed(session, url: str, marker: bytes, on_marker) -> tuple[int, str]:
    """(status, body) of a streamed page; ``on_marker()`` runs as soon as ``marker`` arrived."""
    body = b""
    seen = False
    async with session.get(url) as resp:
        async for chunk in resp.content.iter_any():
            body += chunk
            if not seen and marker in body:
                seen = True
                on_marker()
    assert seen, f"{marker!r} never arrived"
    return resp.status, body.decode()


async def test_movie_title_is_sent_before_the_recommender_answers(stub_backends, serve, tmp_path):
    """The recommender answers only once the browser has the movie's title: the row it sends is
    on the page only if the title went out first, in the same response."""
    title_seen = asyncio.Event()

    async def after_title(path: str) -> None:
        if path.startswith("/v1/similar/"):
            await title_seen.wait()

    stub_backends.recommender.hold = after_title
    settings = stub_settings(tmp_path, stub_backends, **GENEROUS)
    base = await serve(settings)
    async with browser(user_id=4) as session:
        status, body = await read_streamed(
            session, f"{base}/movies/1", b'<h1 id="movie-title">Toy Story', title_seen.set
        )
    assert status == 200
    # The held fragments did arrive, in document order, and the document is complete.
    assert (
        body.index("movie-title")
        < body.index("Watch with Marquee")
        < body.index("More like this")
        < body.index("</html>")
    )
    assert "Stub Movie 2" in body and "recommendations are unavailable" not in body


async def test_unknown_movie_and_catalog_down_are_decided_before_streaming(
    stub_backends, serve, tmp_path
):
    stub_backends.recommender.delay = 3600
    base = await serve(stub_settings(tmp_path, stub_backends, **GENEROUS))
    async with browser() as session:
        async with session.get(f"{base}/movies/99999") as resp:
            body = await resp.text()
            timing = resp.headers["Server-Timing"]
        assert resp.status == 404 and "Not found" in body
        # the pending recommender call was cancelled, not waited for
        assert "recommender;dur=" in timing and 'desc="cancelled"' in timing, timing
        stub_backends.catalog.mode = "error500"
        _, status, body = await timed_get(session, f"{base}/movies/1")
        assert status == 503 and "catalog is unavailable" in body


async def test_head_of_a_streamed_page(stub_backends, serve, tmp_path):
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser() as session, session.head(f"{base}/movies/1") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"


async def test_because_you_watched_follows_the_last_movie_opened(stub_backends, serve, tmp_path):
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser(user_id=2) as session:
        _, _, home = await timed_get(session, f"{base}/")
        assert "For you" in home and "Because you watched" not in home
        _, status, _ = await timed_get(session, f"{base}/movies/5")
        assert status == 200
        _, status, home = await timed_get(session, f"{base}/")
        assert status == 200
        assert 'Because you watched <a href="/movies/5">Stub Movie 5</a>' in home
        section = home[home.index("Because you watched") :]
        section = section[: section.index("</section>")]
        assert 'href="/movies/1"' in section and 'href="/movies/5"' not in section[60:]
        assert (
            home.index("Popular now")
            < home.index("For you")
            < home.index("Because you watched")
            < home.index("Comedy")
        )
        cookie = session.cookie_jar.filter_cookies(URL(base))["marquee_last_movie"].value

    async with browser(user_id=3) as other:  # another user on the same browser: not theirs
        other.cookie_jar.update_cookies({"marquee_last_movie": cookie})
        _, _, home = await timed_get(other, f"{base}/")
        assert "Because you watched" not in home and "For you" in home

    forged = auth.sign("2:7", "not-the-secret", purpose="last_movie")
    async with browser(user_id=2) as session:
        session.cookie_jar.update_cookies({"marquee_last_movie": forged})
        _, _, home = await timed_get(session, f"{base}/")
        assert "Because you watched" not in home

    async with browser() as anonymous:  # anonymous viewers are not tracked
        await timed_get(anonymous, f"{base}/movies/5")
        assert "marquee_last_movie" not in anonymous.cookie_jar.filter_cookies(URL(base))
        _, _, home = await timed_get(anonymous, f"{base}/")
        assert "For you" not in home and "Because you watched" not in home


async def test_personal_rows_disappear_quietly_when_the_recommender_fails(
    stub_backends, serve, tmp_path
):
    base = await serve(stub_settings(tmp_path, stub_backends))
    token = auth.sign("2:5", stubs.SECRET, purpose="last_movie")
    async with browser(user_id=2) as session:
        session.cookie_jar.update_cookies({"marquee_last_movie": token})
        _, _, home = await timed_get(session, f"{base}/")
        assert "Because you watched" in home
        stub_backends.recommender.mode = "error500"
        _, status, home = await timed_get(session, f"{base}/")
    assert status == 200
    assert "Popular now" in home and "Comedy" in home
    assert "For you" not in home and "Because you watched" not in home
    assert "could not be shown" not in home
