"""The batch pages in the monolith: upload with CSRF as a logged-in user, follow the job,
download it; errors show on the form with their lines; other users are refused."""

from __future__ import annotations

import csv
import io
import re

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from services.platform.auth import session_token
from services.platform.settings import Settings
from tests.support import async_wait_until
from web_server.app import create_app
from web_server.session import SESSION_COOKIE

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def site(batch_settings: Settings):
    app = create_app(batch_settings)  # the monolith: batch pages, API and worker built in
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


def browser(settings: Settings, user: int | None) -> aiohttp.ClientSession:
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for 127.0.0.1
    session = aiohttp.ClientSession(cookie_jar=jar)
    if user is not None:
        token = session_token(user, settings.secret_key)
        session.cookie_jar.update_cookies({SESSION_COOKIE: token})
    return session


async def upload(
    session: aiohttp.ClientSession,
    site: str,
    data: bytes,
    *,
    k: str = "5",
    token: str | None = None,
) -> aiohttp.ClientResponse:
    if token is None:
        async with session.get(f"{site}/batch") as resp:
            token = CSRF.search(await resp.text()).group(1)
    form = aiohttp.FormData()
    form.add_field("csrf_token", token)
    form.add_field("k", k)
    form.add_field("file", data, filename="mine.csv", content_type="text/csv")
    return await session.post(f"{site}/batch", data=form, allow_redirects=False)


async def test_upload_follow_download(site: str, batch_settings: Settings, loaded_model):
    model, manifest = loaded_model
    async with browser(batch_settings, 11) as me, browser(batch_settings, 12) as other:
        resp = await upload(me, site, b"movie_id\n1\n260\n")
        assert resp.status == 303, await resp.text()
        page = resp.headers["Location"]
        job_id = page.rsplit("/", 1)[1]
        assert page == f"/batch/{job_id}"

        text = ""

        async def finished() -> bool:
            nonlocal text
            async with me.get(f"{site}{page}") as r:
                assert r.status == 200
                text = await r.text()
                if "Results" not in text:
                    assert r.headers["Refresh"] == "2" and 'http-equiv="refresh"' in text
                return "Results" in text

        await async_wait_until(finished, 20, "the job page to show results")
        assert manifest.version in text and "Toy Story" in text
        similar_to_toy_story = model.similar(1, 5)[0][0]
        assert f'href="/movies/{similar_to_toy_story}"' in text
        assert 'http-equiv="refresh"' not in text

        async with me.get(f"{site}{page}/results.csv") as r:
            assert r.status == 200
            rows = list(csv.DictReader(io.StringIO(await r.text())))
        assert len(rows) == 10 and rows[0]["movie_id"] == "1"
        async with me.get(f"{site}{page}/results.json") as r:
            assert r.status == 200 and (await r.json())["count"] == 10

        async with me.get(f"{site}/batch") as r:
            assert job_id[:8] in await r.text()
        for url in (page, f"{page}/results.csv"):
            async with other.get(f"{site}{url}") as r:
                assert r.status == 403
        async with other.get(f"{site}/batch") as r:
            assert job_id[:8] not in await r.text()


async def test_errors_show_on_the_form(
    batch_keys, site: str, batch_settings: Settings, redis_client
):
    async with browser(batch_settings, 11) as me:
        resp = await upload(me, site, b"movie_id\n1\nabc\n4\nx1\n")
        text = await resp.text()
        assert resp.status == 400
        assert "line 3: &#39;abc&#39; is not a valid movie_id" in text
        assert "line 5: &#39;x1&#39; is not a valid movie_id" in text
        resp = await upload(me, site, b"\x00\x01binary")
        assert resp.status == 400 and "line 1: binary data" in await resp.text()
        resp = await upload(me, site, b"movie_id\n1\n", k="0")
        assert resp.status == 400 and "k must be an integer" in await resp.text()
    assert await redis_client.xlen(batch_keys.stream) == 0


async def test_csrf_and_login_are_required(
    batch_keys, site: str, batch_settings: Settings, redis_client
):
    async with browser(batch_settings, 11) as me:
        resp = await upload(me, site, b"movie_id\n1\n", token="forged")
        assert resp.status == 403
    async with browser(batch_settings, None) as anonymous:
        async with anonymous.get(f"{site}/batch") as r:
            text = await r.text()
            assert r.status == 200 and "log in" in text and 'type="file"' not in text
        resp = await upload(anonymous, site, b"movie_id\n1\n", token="x")
        assert resp.status == 403
        async with anonymous.get(f"{site}/batch/{'a' * 32}", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")
    assert await redis_client.xlen(batch_keys.stream) == 0
