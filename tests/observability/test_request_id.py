"""One page view can be followed through every service's logs by its X-Request-ID (microservices
mode: four processes, four log files)."""

from __future__ import annotations

import uuid

from tests.observability.helpers import access_lines, json_lines
from tests.support import wait_until
from tests.web.helpers import browser

SERVICES = ("web", "catalog", "subscription", "recommender")
SECRET = "test-secret-key-of-the-suite"
FRESH_MOVIE = 260  # viewed by no other test of this stack: its similar row is not cached yet


def _seen_everywhere(stack, request_id: str) -> bool:
    return all(access_lines(stack.processes[s].log_path, request_id) for s in SERVICES)


async def test_a_page_view_is_followed_through_every_service(logged_stack):
    request_id = f"page-{uuid.uuid4().hex}"
    async with browser() as warm, warm.get(f"{logged_stack.web_url}/movies/2") as resp:
        assert resp.status == 200  # first calls (connections, model pages) off the measured view
        await resp.read()
    async with (
        browser(user_id=7, secret=SECRET) as session,
        session.get(
            f"{logged_stack.web_url}/movies/{FRESH_MOVIE}", headers={"X-Request-ID": request_id}
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["X-Request-ID"] == request_id
        assert "catalog" in resp.headers["Server-Timing"]
        await resp.read()

    wait_until(lambda: _seen_everywhere(logged_stack, request_id), 10, "the id in every log")
    routes = {}
    for service in SERVICES:
        lines = access_lines(logged_stack.processes[service].log_path, request_id)
        assert all(line["service"] == service for line in lines)
        assert all(line["status"] == 200 for line in lines), lines
        routes[service] = {line["route"] for line in lines}
    assert routes["web"] == {"/movies/{id}"}
    assert "/v1/movies/{movie_id}" in routes["catalog"]
    assert "/v1/movies" in routes["catalog"]  # the titles of the similar movies
    assert "/v1/users/{user_id}/subscription" in routes["subscription"]
    assert "/v1/similar/{movie_id}" in routes["recommender"]


async def test_the_web_server_makes_the_id_when_the_browser_sends_none(logged_stack):
    url = f"{logged_stack.web_url}/api/pages/movies/2"
    async with browser() as session, session.get(url) as resp:
        assert resp.status == 200
        request_id = resp.headers["X-Request-ID"]
    assert len(request_id) >= 16
    for service in ("web", "catalog", "recommender"):
        log = logged_stack.processes[service].log_path
        wait_until(lambda p=log: access_lines(p, request_id), 10, f"the id in {service}'s log")
    # an anonymous view never calls the subscription service
    assert not access_lines(logged_stack.processes["subscription"].log_path, request_id)


async def test_every_log_line_of_every_service_is_json(logged_stack):
    for service in SERVICES:
        path = logged_stack.processes[service].log_path
        lines = [t for t in path.read_text().splitlines() if t.strip()]
        assert lines and len(json_lines(path)) == len(lines), f"{service}: non-JSON output"
        assert any(e.get("msg") == "listening" for e in json_lines(path))
