"""A person browsing Marquee in Chromium: home → search → movie → similar → log in → subscribe →
cancel; the keyboard path; and the phone layout."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import PHONE

MATRIX = 2571


def similar_links(page: Page):
    return page.get_by_role("list", name="Similar movies").get_by_role("link")


def test_browse_search_log_in_subscribe_and_cancel(page: Page, monolith) -> None:
    page.goto(monolith.url + "/")
    expect(page.get_by_role("heading", name="Popular now")).to_be_visible()
    expect(page.get_by_role("heading", name="Comedy")).to_be_visible()

    search = page.get_by_role("searchbox", name="Search movies by title")
    search.fill("matrix")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?q=matrix$"))
    results = page.get_by_role("list", name="Search results")
    results.get_by_role("link", name="The Matrix", exact=True).click()

    expect(page).to_have_url(f"{monolith.url}/movies/{MATRIX}")
    expect(page.get_by_role("heading", level=1)).to_have_text("The Matrix (1999)")
    expect(
        page.get_by_role("img", name=re.compile(r"^Poster placeholder for The Matrix"))
    ).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("^IMDb"))).to_have_attribute(
        "href", "https://www.imdb.com/title/tt0133093/"
    )
    expect(page.get_by_role("heading", name="More like this")).to_be_visible()
    expect(similar_links(page).first).to_be_visible()
    assert similar_links(page).count() >= 8
    expect(page.get_by_role("complementary", name="Join Marquee")).to_be_visible()

    page.get_by_role("navigation", name="Main")  # the nav landmark exists
    page.get_by_role("banner").get_by_role("link", name="Log in").click()
    page.get_by_label("MovieLens user id").fill("1")  # a demo login (development)
    page.get_by_role("button", name="Log in as this user").click()
    expect(page).to_have_url(f"{monolith.url}/movies/{MATRIX}")
    expect(page.get_by_role("banner")).to_contain_text("User 1")

    plan_box = page.get_by_role("complementary", name="Watch with Marquee")
    plan_box.get_by_label("Standard").check()
    plan_box.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Your plan: Standard")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("The Matrix (1999)")

    page.get_by_role("button", name="Cancel subscription").click()
    expect(page.get_by_role("heading", name="Your plan: Standard")).to_have_count(0)
    expect(page.get_by_role("group", name="Choose a plan")).to_be_visible()

    # Home now has the personal rows: picks from user 1's history and the movie just opened.
    page.get_by_role("link", name="Home", exact=True).click()
    expect(page.get_by_role("heading", name="For you")).to_be_visible()
    because = page.get_by_role("heading", name=re.compile("^Because you watched"))
    expect(because).to_have_text("Because you watched The Matrix")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("banner").get_by_role("link", name="Log in")).to_be_visible()
    expect(page.get_by_role("heading", name="For you")).to_have_count(0)


def focus_info(page: Page) -> dict:
    return page.evaluate(
        """() => {
            const el = document.activeElement;
            const style = getComputedStyle(el);
            return {id: el.id, tag: el.tagName, href: el.getAttribute("href") || "",
                    inSimilar: !!el.closest('[aria-label="Similar movies"]'),
                    outline: style.outlineStyle, outlineWidth: parseFloat(style.outlineWidth)};
        }"""
    )


def tab_until(page: Page, wanted, limit: int = 60) -> dict:
    for _ in range(limit):
        page.keyboard.press("Tab")
        info = focus_info(page)
        if wanted(info):
            return info
    raise AssertionError(f"Tab never reached the element; last focus {info}")


def test_keyboard_reaches_search_and_similar_movies_with_visible_focus(
    page: Page, monolith
) -> None:
    page.goto(f"{monolith.url}/movies/{MATRIX}")
    expect(similar_links(page).first).to_be_visible()

    page.keyboard.press("Tab")
    skip = focus_info(page)
    assert skip["href"] == "#main" and skip["outline"] == "solid"
    page.keyboard.press("Enter")  # the skip link moves focus to the main content
    assert focus_info(page)["id"] == "main"

    page.keyboard.press("Shift+Tab")  # back into the header
    search = tab_until(page, lambda f: f["id"] == "site-q")
    assert search["outline"] == "solid" and search["outlineWidth"] >= 2

    link = tab_until(page, lambda f: f["inSimilar"])
    # A tracked link (/r/<token>/<id>): following it redirects to the movie, no script needed.
    tracked = re.fullmatch(r"/r/[A-Za-z0-9_.-]+/(\d+)", link["href"])
    assert tracked and link["outline"] == "solid"
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{monolith.url}/movies/{tracked.group(1)}")
    expect(page.get_by_role("heading", level=1)).to_be_visible()


def test_phone_width_has_no_sideways_scrolling(page: Page, monolith) -> None:
    page.set_viewport_size(PHONE)
    for path in ("/", f"/movies/{MATRIX}", "/search?q=star", "/login", "/batch"):
        page.goto(monolith.url + path)
        expect(page.get_by_role("main")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width}px wide on a 390px phone"
    # The card rows scroll sideways inside themselves instead.
    page.goto(monolith.url + "/")
    row = page.get_by_role("list", name="Popular now")
    assert row.evaluate("el => el.scrollWidth > el.clientWidth")
