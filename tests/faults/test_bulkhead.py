"""Bulkhead: each backend has its own connection pool, so a stalled recommender holding every
connection it may have cannot slow the calls to the catalog."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.conftest import FaultStack, browser, page_urls
from tests.faults.load import Load, figures

RECOMMENDER_TIMEOUT_MS = 300  # Settings.recommender_timeout


@pytest.mark.timing
async def test_stalled_recommender_does_not_slow_catalog_calls(stack: FaultStack, spawn, record):
    # A web server whose circuit never opens and whose pools are small: while the recommender
    # is stalled every one of its 4 connections is stuck and page requests queue for them.
    web_url, _ = await spawn("web", breaker_failures="1000000", backend_connections="4")
    searches = [f"{web_url}/search?q={q}" for q in ("star", "love", "war", "man", "day")]
    pages = page_urls(web_url, stack.movie_ids)
    async with (
        browser() as page_session,
        browser() as search_session,
        Load(search_session, searches, concurrency=2) as search,
    ):
        await search.wait_for(40)
        stalled = time.monotonic()
        stack.process("recommender").signal(signal.SIGSTOP)
        try:
            async with Load(page_session, pages, concurrency=12) as load:
                await load.wait_for(60, since=stalled, seconds=2.0)
                ended = time.monotonic()
        finally:
            stack.process("recommender").signal(signal.SIGCONT)
    baseline = figures(search.since(0, stalled))
    during = figures(search.since(stalled, ended))
    page_figures = figures(load.samples)
    numbers = during | {
        "search_p99_ms_before": baseline["p99_ms"],
        "page_p50_ms_during": page_figures["p50_ms"],
        "page_errors_during": page_figures["errors"],
    }
    line = record("bulkhead: catalog-only /search while recommender stalls", numbers)
    # The recommender's pool really was exhausted: pages waited out the recommender's deadline.
    assert page_figures["p50_ms"] >= RECOMMENDER_TIMEOUT_MS * 0.9, line
    assert page_figures["errors"] == 0, line
    assert numbers["errors"] == 0, line
    # ...and the catalog's calls never queued behind it (they would wait out the recommender's
    # deadline, ~300 ms, each; ~10-20 ms expected).
    assert numbers["p50_ms"] < RECOMMENDER_TIMEOUT_MS / 2, line
