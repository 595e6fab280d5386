"""Make the README's screenshots: home, movie and batch pages at desktop and phone widths, and
the operator dashboard at desktop width.

    .venv/bin/python docs/screenshots/make_screenshots.py            # starts its own Marquee
    .venv/bin/python docs/screenshots/make_screenshots.py --url http://127.0.0.1:8080

Without ``--url`` it starts the whole system for real in a temporary directory: a redis-server
on a free port (when installed), a model trained on the bundled data, and ``python -m
web_server`` (monolith) on a free port; everything it starts is stopped by PID at the end.
It drives the system's Chromium (Debian ``chromium``) with Playwright, logged in as MovieLens
user 1, and writes ``docs/screenshots/{home,movie,batch}-{desktop,phone}.png``; then it logs in
to ``/admin`` with the admin token (``--admin-token``, default ``$MARQUEE_ADMIN_TOKEN`` or the
test suite's) and writes ``docs/screenshots/admin-desktop.png``. The Marquee it starts itself
also gets a second model version and an experiment between the two (half and half), and a few
anonymous visitors browse and follow similar movies first, so the dashboard's experiment section
has counts to show.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

from recommender.registry import ModelRegistry  # noqa: E402
from tests.browser.conftest import (  # noqa: E402
    DESKTOP,
    LAUNCH_ARGS,
    PHONE,
    chromium_path,
    monolith_env,
    start_monolith,
)
from tests.support import TEST_SECRETS, free_port, start_redis  # noqa: E402

OUT = Path(__file__).resolve().parent
MOVIE = 2571  # The Matrix
POPULAR = (1, 2571, 318, 356, 296, 593, 260, 480, 110, 589, 2959, 527)  # all in the catalog
BATCH_CSV = b"movie_id\n1\n2571\n318\n356\n"
SIZES = {"desktop": {**DESKTOP, "height": 900}, "phone": PHONE}


@contextlib.contextmanager
def marquee(url: str | None) -> Iterator[str]:
    """A running Marquee: the one given, or a fresh monolith in a temporary directory."""
    if url:
        yield url.rstrip("/")
        return
    with tempfile.TemporaryDirectory(prefix="marquee-shots-") as tmp:
        work = Path(tmp)
        redis = None
        redis_url = ""
        if shutil.which("redis-server"):
            port = free_port()
            redis = start_redis(port, work)
            redis_url = f"redis://127.0.0.1:{port}/0"
        models = work / "models"
        train(models)
        start_experiment(work, redis_url, models)
        server = start_monolith(work, redis_url, models, work / "catalog.sqlite3")
        try:
            yield server.url
        finally:
            server.process.stop()
            if redis is not None:
                redis.stop()


def train(models: Path, *options: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "recommender", "train", "--model-dir", str(models), *options],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def start_experiment(work: Path, redis_url: str, models: Path) -> None:
    """A second version (trained again, not published) and an experiment between the published
    one and it, started with the CLI as an operator would."""
    train(models, "--no-publish")
    registry = ModelRegistry(models)
    control = registry.current_version()
    candidate = next(m.version for m in reversed(registry.manifests()) if m.version != control)
    assert control is not None
    env = monolith_env(work, redis_url, models, work / "catalog.sqlite3", free_port())
    command = ["experiment", "start", "--control", control, "--candidate", candidate]
    subprocess.run(
        [sys.executable, "-m", "recommender", *command, "--share", "0.5"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def browse_as_visitors(browser: Browser, base: str, visitors: int = 12) -> None:
    """Anonymous visitors (each its own cookies, so its own arm) open two movies each and
    every other one follows the first similar movie: impressions and clicks for the arms."""
    for n in range(visitors):
        context = browser.new_context(viewport=SIZES["desktop"])
        page = context.new_page()
        for movie in (POPULAR[n % len(POPULAR)], POPULAR[(n + 5) % len(POPULAR)]):
            page.goto(f"{base}/movies/{movie}")
            page.wait_for_load_state("load")
        if n % 2 == 0:
            page.get_by_role("list", name="Similar movies").get_by_role("link").first.click()
            page.wait_for_load_state("load")
        context.close()


def log_in(page: Page, base: str, user_id: int = 1) -> None:
    page.goto(f"{base}/login?next=/movies/{MOVIE}")
    page.get_by_label("MovieLens user id").fill(str(user_id))  # a demo login (development)
    page.get_by_role("button", name="Log in as this user").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("The Matrix")


def run_batch_job(page: Page, base: str) -> None:
    """One finished job, so the batch page shows its job list as well as the upload form."""
    page.goto(f"{base}/batch")
    page.get_by_label("CSV file").set_input_files(
        {"name": "movies.csv", "mimeType": "text/csv", "buffer": BATCH_CSV}
    )
    page.get_by_role("button", name="Upload and run").click()
    expect(page.locator("#batch-status")).to_have_text("done", timeout=30_000)


def shoot(page: Page, base: str, width: str) -> None:
    for name, path in (("home", "/"), ("movie", f"/movies/{MOVIE}"), ("batch", "/batch")):
        page.goto(base + path)
        page.wait_for_load_state("load")
        target = OUT / f"{name}-{width}.png"
        page.screenshot(path=str(target))
        print(f"wrote {target.relative_to(ROOT)}")


def shoot_admin(page: Page, base: str, token: str) -> None:
    """The operator dashboard, whole page (it is longer than a screen)."""
    page.goto(f"{base}/admin/login")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Operator dashboard")).to_be_visible()
    deadline = time.monotonic() + 20  # the aggregator counts within a second or two
    while time.monotonic() < deadline and not _counted(page):
        page.wait_for_timeout(500)  # a screenshot tool polling, not a test: no assertion here
        page.reload()
    target = OUT / "admin-desktop.png"
    page.screenshot(path=str(target), full_page=True)
    print(f"wrote {target.relative_to(ROOT)}")


def _counted(page: Page) -> bool:
    """The experiment table shows some impressions (or there is no experiment to wait for)."""
    arms = page.locator("#arms td.num")
    if arms.count() == 0:
        return True
    return any(arms.nth(i).inner_text() not in ("0", "0.00%") for i in range(arms.count()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running Marquee to photograph (default: start one)")
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("MARQUEE_ADMIN_TOKEN") or TEST_SECRETS["admin_token"],
        help="the admin token of the Marquee photographed (the dashboard's login)",
    )
    args = parser.parse_args()
    with marquee(args.url) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=LAUNCH_ARGS
        )
        try:
            context = browser.new_context(viewport=SIZES["desktop"])
            page = context.new_page()
            log_in(page, base)
            run_batch_job(page, base)
            cookies = context.cookies()
            shoot(page, base, "desktop")
            browse_as_visitors(browser, base)
            shoot_admin(page, base, args.admin_token)
            context.close()
            phone = browser.new_context(viewport=SIZES["phone"], is_mobile=True, has_touch=True)
            phone.add_cookies(cookies)
            shoot(phone.new_page(), base, "phone")
            phone.close()
        finally:
            browser.close()


if __name__ == "__main__":
    main()
