"""Request body size limits: a body over the limit is refused with 413 (JSON on the APIs) whether
it declares its length or streams it chunked, and nothing is applied."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from tests.conftest import replace
from tests.security.conftest import SERVICE_TOKEN, browser, csrf_tokens, get_page, log_in
from tests.support import SERVICE

LIMIT = 2048
BATCH_LIMIT = 8192


@pytest.fixture
def small(settings):
    return replace(settings, max_body_bytes=LIMIT, batch_max_bytes=BATCH_LIMIT)


async def _chunked(body: bytes, size: int = 512):
    for i in range(0, len(body), size):
        yield body[i : i + size]


def _big_json(n: int) -> bytes:
    return orjson.dumps({"plan": "basic", "history": [1] * 10, "pad": "x" * n})


async def _assert_413_json(http, method: str, url: str, body: bytes, headers: dict) -> None:
    for data in (body, _chunked(body)):
        async with http.request(method, url, data=data, headers=headers) as resp:
            assert resp.status == 413, (url, await resp.text())
            assert resp.content_type == "application/json"
            assert (await resp.json())["error"]["code"] == "too_large"


async def test_subscription_refuses_large_bodies(small, serve_app, http):
    from services.subscription.app import create_app

    base = await serve_app(create_app(small))
    url = f"{base}/v1/users/5/subscription"
    headers = {
        "Authorization": f"Bearer {SERVICE_TOKEN}",
        "Idempotency-Key": "big-1",
        "Content-Type": "application/json",
    }
    await _assert_413_json(http, "PUT", url, _big_json(LIMIT), headers)
    async with http.get(url, headers=headers) as resp:
        assert (await resp.json())["status"] == "none"  # nothing applied
    ok = orjson.dumps({"plan": "basic"})
    async with http.put(url, data=ok, headers={**headers, "Idempotency-Key": "ok-1"}) as resp:
        assert resp.status == 200


async def test_recommender_refuses_large_bodies(small, serve_app, http):
    from recommender.app import create_app

    base = await serve_app(create_app(small))
    json_headers = {"Content-Type": "application/json"}
    await _assert_413_json(
        http, "POST", f"{base}/v1/recommendations", _big_json(LIMIT), json_headers
    )
    csv = b"movie_id\n" + b"1\n" * (BATCH_LIMIT // 2 + 10)
    csv_headers = {"Content-Type": "text/csv", **SERVICE}
    await _assert_413_json(http, "POST", f"{base}/v1/batch", csv, csv_headers)
    small_csv = b"movie_id\n1\n2\n"
    async with http.post(f"{base}/v1/batch", data=small_csv, headers=csv_headers) as resp:
        assert resp.status == 202  # the batch limit, not the small JSON one, applies to uploads


async def test_catalog_reads_no_bodies(small, serve_app, http):
    """The catalog has no route taking a body: a large one is refused without being read."""
    from services.catalog.app import create_app

    base = await serve_app(create_app(small))
    async with http.post(f"{base}/v1/movies", data=b"x" * (LIMIT * 4)) as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_web_server_refuses_large_forms_and_uploads(small, serve_app, http):
    from web_server.app import create_app

    base = await serve_app(create_app(replace(small, mode="monolith")))
    # the monolith's APIs: JSON 413
    await _assert_413_json(
        http,
        "POST",
        f"{base}/v1/recommendations",
        _big_json(LIMIT),
        {"Content-Type": "application/json"},
    )
    async with browser() as session:
        page = await get_page(session, f"{base}/login")
        form = {"csrf_token": csrf_tokens(page)[0], "user_id": "5", "pad": "x" * LIMIT}
        async with session.post(f"{base}/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 413  # an HTML error page on an HTML route
            assert "marquee_session" not in resp.cookies
        await log_in(session, base, 5)
        page = await get_page(session, f"{base}/batch")
        data = aiohttp.FormData()
        data.add_field("csrf_token", csrf_tokens(page)[-1])
        data.add_field("k", "5")
        data.add_field(
            "file",
            b"movie_id\n" + b"1\n" * BATCH_LIMIT,
            filename="big.csv",
            content_type="text/csv",
        )
        async with session.post(f"{base}/batch", data=data, allow_redirects=False) as resp:
            assert resp.status == 413
            assert "limit" in (await resp.text()).lower()
