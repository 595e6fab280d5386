"""A person making an account in Chromium, on a production-mode Marquee (no demo logins): join →
log out → a wrong password is refused → log in → subscribe → the plan is theirs."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

MATRIX = 2571
PASSWORD = "there is no spoon"


def test_join_log_in_and_subscribe(page: Page, production_monolith) -> None:
    base = production_monolith.url
    page.goto(f"{base}/movies/{MATRIX}")
    banner = page.get_by_role("banner")
    banner.get_by_role("link", name="Log in").click()
    expect(page.get_by_label("MovieLens user id")).to_have_count(0)  # production: no demo login
    page.get_by_role("link", name="Join Marquee").click()

    page.get_by_label("Name").fill("trinity")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password, again").fill(PASSWORD)
    page.get_by_role("button", name="Join").click()
    expect(page).to_have_url(f"{base}/movies/{MATRIX}")
    expect(banner).to_contain_text("trinity")

    banner.get_by_role("button", name="Log out").click()
    expect(banner.get_by_role("link", name="Log in")).to_be_visible()
    banner.get_by_role("link", name="Log in").click()
    page.get_by_label("Name").fill("trinity")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile("wrong name or password"))
    expect(page.get_by_label("Name")).to_have_value("trinity")  # kept; the password is not
    expect(page.get_by_label("Password")).to_have_value("")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(banner).to_contain_text("trinity")

    page.goto(f"{base}/movies/{MATRIX}")
    plan_box = page.get_by_role("complementary", name="Watch with Marquee")
    plan_box.get_by_label("Standard").check()
    plan_box.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Your plan: Standard")).to_be_visible()
    expect(banner).to_contain_text("trinity")
