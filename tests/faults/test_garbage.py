"""Backends that answer, but wrongly: garbage bodies, 500s, JSON of the wrong shape. A second web
server process is pointed at a misbehaving server (a real HTTP server on a loopback port) for its
subscription and recommender backends; the catalog is the stack's real one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.faults.conftest import USER_ID, FaultStack, browser, page_urls
from tests.faults.load import Load, Sample, failures, figures

FALLBACK_NOTE = "recommendations are unavailable right now"
PLAN_NOTE = "Your plan cannot be shown right now."
PHASE = 150  # at least this many page requests per kind of bad answer...
PHASE_S = 1.0  # ...over at least this many seconds

ANSWERS = {
    "garbage": lambda: web.Response(text="<html>oops, not JSON", content_type="text/html"),
    "500": lambda: web.json_response(
        {"error": {"code": "internal", "message": "boom"}}, status=500
    ),
    "truncated": lambda: web.Response(
        text='{"items": [{"movie_id": 1, "sco', content_type="application/json"
    ),
    "wrong_shape": lambda: web.json_response({"unexpected": [1, 2, 3]}),
}


@pytest.fixture
async def bad_backend() -> AsyncIterator[tuple[str, dict]]:
    """A server answering every request per ``state["mode"]``; yields (base URL, state)."""
    state = {"mode": "garbage", "calls": 0}

    async def answer(request: web.Request) -> web.StreamResponse:
        state["calls"] += 1
        return ANSWERS[state["mode"]]()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), state
    await server.close()


def degraded_ok(sample: Sample) -> bool:
    """200, with the "Join" box and the popular-in-genre row, both marked degraded."""
    if sample.status != 200:
        return False
    if sample.is_json:
        data = sample.json()
        return (
            {"plan", "similar"} <= set(data["degraded"])
            and data["similar"]["source"] == "fallback"
            and len(data["similar"]["items"]) >= 8
        )
    return PLAN_NOTE in sample.body and FALLBACK_NOTE in sample.body and "Join" in sample.body


async def test_backends_answer_garbage_or_500s(stack: FaultStack, bad_backend, spawn, record):
    url, state = bad_backend
    # The circuit would soon stop calls to a backend this bad (tests/faults/test_backends.py
    # shows it opening); kept closed here, every page really meets each kind of bad answer.
    web_url, _ = await spawn(
        "web", subscription_url=url, recommender_urls=url, breaker_failures="1000000"
    )
    async with browser(USER_ID) as session:
        for mode in ANSWERS:
            state["mode"] = mode
            calls = state["calls"]
            async with Load(session, page_urls(web_url, stack.movie_ids)) as load:
                await load.wait_for(PHASE, since=time.monotonic(), seconds=PHASE_S)
            numbers = figures(load.samples, degraded_ok)
            numbers["bad_backend_calls"] = state["calls"] - calls
            line = record(f"backends answer {mode}", numbers)
            assert numbers["errors"] == 0, f"{line}: {failures(load.samples, degraded_ok)}"
            assert numbers["bad_backend_calls"] >= numbers["requests"], line
