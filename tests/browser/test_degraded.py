"""The microservices deployment in Chromium with the recommender stopped: the movie page still
shows, with popular movies in its place and a note saying so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import Stack, stack_env, start_stack


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, model_dir: Path, catalog_db: Path) -> Iterator[Stack]:
    stack = start_stack(tmp_path, stack_env(tmp_path, redis_url, model_dir, catalog_db))
    yield stack
    stack.stop()


def test_movie_page_shows_without_the_recommender(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.web_url}/movies/2571")
    expect(page.get_by_role("heading", name="More like this")).to_be_visible()

    stack.processes["recommender"].stop()
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("The Matrix (1999)")
    note = page.get_by_role("status").filter(has_text="recommendations are unavailable")
    expect(note).to_be_visible()
    expect(page.get_by_role("heading", name="Popular Sci-Fi movies")).to_be_visible()
    links = page.get_by_role("list", name="Similar movies").get_by_role("link")
    expect(links.first).to_be_visible()
    assert links.count() >= 8
    expect(page.get_by_role("complementary", name="Join Marquee")).to_be_visible()
