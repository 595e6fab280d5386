"""Malformed bodies are bad input (400), never a 500: the cases fuzzing found, kept as tests."""

from __future__ import annotations

import pytest

from tests.security.conftest import browser, csrf_tokens, get_page, log_in
from tests.support import SERVICE

BROKEN = [
    ("multipart/form-data", b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--"),
    (
        "multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="\x83\x05"\r\n\r\n1\r\n--x--\r\n',
    ),
    ("application/x-www-form-urlencoded; charset=no-such-charset", b"csrf_token=a&user_id=1"),
]


@pytest.mark.parametrize(("content_type", "body"), BROKEN)
async def test_broken_forms_on_the_web_server_are_400(web_base, content_type, body):
    async with browser() as session:
        await log_in(session, web_base, 9)
        for path in ("/login", "/logout", "/subscription", "/batch"):
            async with session.post(
                f"{web_base}{path}", data=body, headers={"Content-Type": content_type}
            ) as resp:
                # /batch reads a non-multipart body as a raw CSV: then its CSRF check refuses it
                raw_upload = path == "/batch" and not content_type.startswith("multipart/")
                assert resp.status == (403 if raw_upload else 400), (path, resp.status)
                assert "text/html" in resp.headers["Content-Type"]  # an error page


@pytest.mark.parametrize(("content_type", "body"), BROKEN[:2])
async def test_broken_uploads_on_the_batch_api_are_400_json(web_base, http, content_type, body):
    async with http.post(
        f"{web_base}/v1/batch", data=body, headers={"Content-Type": content_type, **SERVICE}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_form"


async def test_a_good_form_still_works(web_base):
    async with browser() as session:
        page = await get_page(session, f"{web_base}/login")
        form = {"csrf_token": csrf_tokens(page)[0], "user_id": "9", "next": "/"}
        async with session.post(f"{web_base}/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 303
