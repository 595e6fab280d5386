"""The web server's session check (issue 18.2) against stub backends: a logged-in viewer costs
one question to the subscription service per re-check interval, not one per page; an outage of
that service degrades the page without logging the viewer out."""

from __future__ import annotations

import asyncio
import re

from tests.support import async_wait_until
from tests.web.conftest import stub_settings
from tests.web.helpers import browser, timed_get

SESSION_PATH = "/v1/users/7/session"


def header_user(page: str) -> str:
    found = re.search(r'aria-label="Logged in as ([^"]+)"', page)
    return found.group(1) if found else ""


async def test_a_logged_in_viewer_is_checked_once_not_on_every_page(stub_backends, serve, tmp_path):
    base = await serve(stub_settings(tmp_path, stub_backends, session_recheck=3600.0))
    async with browser(user_id=7) as session:
        for path in ("/movies/1", "/", "/movies/2", "/search?q=toy", "/movies/1") * 4:
            _, status, page = await timed_get(session, f"{base}{path}")
            assert status == 200 and header_user(page) == "User 7", path
    assert stub_backends.subscription.calls.count(SESSION_PATH) == 1


async def test_an_answer_past_the_recheck_is_asked_again(stub_backends, serve, tmp_path):
    base = await serve(stub_settings(tmp_path, stub_backends, session_recheck=1e-6))
    async with browser(user_id=7) as session:
        for _ in range(3):
            _, status, page = await timed_get(session, f"{base}/")
            assert status == 200 and header_user(page) == "User 7"

    async def asked_again() -> bool:  # the first visit waited for its answer; later ones ask
        return stub_backends.subscription.calls.count(SESSION_PATH) >= 2  # in the background

    await async_wait_until(asked_again, 10, "a background re-check")


async def test_a_subscription_outage_degrades_without_logging_the_viewer_out(
    stub_backends, serve, tmp_path
):
    stub_backends.subscription.mode = "error500"
    base = await serve(stub_settings(tmp_path, stub_backends))
    async with browser(user_id=7) as session:
        _, status, page = await timed_get(session, f"{base}/movies/1")
        assert status == 200 and header_user(page) == "User 7"
        async with session.get(f"{base}/api/pages/movies/1") as resp:
            assert "plan" in (await resp.json())["degraded"]


async def test_a_stalled_session_check_does_not_hold_the_page(stub_backends, serve, tmp_path):
    """The question about a user first seen hangs (until the test ends): the page still comes,
    complete, the viewer believed on the signature of their cookie this once."""
    answer = asyncio.Event()

    async def stall_the_session_check(path: str) -> None:
        if path == SESSION_PATH:
            await answer.wait()

    stub_backends.subscription.hold = stall_the_session_check
    base = await serve(stub_settings(tmp_path, stub_backends))
    try:
        async with browser(user_id=7) as session:
            _, status, page = await timed_get(session, f"{base}/movies/1")
        assert status == 200 and header_user(page) == "User 7" and "Choose a plan" in page
        assert SESSION_PATH in stub_backends.subscription.calls and not answer.is_set()
    finally:
        answer.set()
