"""An operator in Chromium: the dashboard asks for the admin token, refuses a wrong one, shows
the services, the model versions and the traffic once logged in, and logs out."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from recommender.registry import ModelRegistry
from tests.support import TEST_SECRETS


def test_an_operator_logs_in_and_sees_the_dashboard(page: Page, monolith, model_dir) -> None:
    version = ModelRegistry(model_dir).current_version()
    assert version
    page.goto(f"{monolith.url}/admin")
    expect(page).to_have_url(f"{monolith.url}/admin/login")

    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That is not the admin token.")

    page.get_by_label("Admin token").fill(TEST_SECRETS["admin_token"])
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{monolith.url}/admin")
    expect(page.get_by_role("heading", name="Operator dashboard")).to_be_visible()

    services = page.locator("#health")
    for service in ("catalog", "subscription", "recommender", "web"):
        row = services.get_by_role("row", name=re.compile(f"^{service} "))
        expect(row).to_contain_text("ready")
    expect(page.locator("#loaded")).to_contain_text(version)
    expect(page.locator("#published").get_by_role("row", name=re.compile(version))).to_contain_text(
        "published"
    )
    expect(page.get_by_role("heading", name="Experiment")).to_be_visible()
    expect(page.get_by_role("heading", name="Cache hit ratios")).to_be_visible()

    page.get_by_role("button", name="Log out of the dashboard").click()
    expect(page).to_have_url(f"{monolith.url}/admin/login")
    page.goto(f"{monolith.url}/admin")
    expect(page).to_have_url(f"{monolith.url}/admin/login")
