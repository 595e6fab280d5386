"""Browser tests: Playwright for Python driving the system's Chromium (Debian ``chromium``)
against Marquee started for real, as the ``python -m web_server`` process a person would run.

No Playwright browser is ever downloaded: the tests launch ``/usr/bin/chromium`` (``make
system-deps`` / ``.ci/run`` install it). A failed test leaves a screenshot of its page in
``test-artifacts/browser/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support import (
    PROJECT_ROOT,
    PYTHON,
    Process,
    free_port,
    http_ready,
    marquee_env,
    wait_until,
)

ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    """The system's Chromium; the browser tests need it (``make system-deps`` installs it)."""
    path = os.environ.get("MARQUEE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError("Chromium is missing: install the Debian package `chromium`")
    return path


@dataclass
class Server:
    url: str
    process: Process


def monolith_env(
    var_dir: Path,
    redis_url: str,
    model_dir: Path,
    catalog_db: Path,
    port: int,
    *,
    development: bool = True,  # demo logins (MovieLens user ids) as well as accounts
) -> dict[str, str]:
    return marquee_env(
        development=development,
        mode="monolith",
        web_port=port,
        var_dir=var_dir,
        catalog_db=catalog_db,
        model_dir=model_dir,
        redis_url=redis_url,
    )


def start_monolith(
    var_dir: Path,
    redis_url: str,
    model_dir: Path,
    catalog_db: Path,
    timeout: float = 60.0,
    *,
    development: bool = True,
) -> Server:
    """``python -m web_server`` (monolith) on a free port, ready when /readyz answers 200."""
    port = free_port()
    env = monolith_env(var_dir, redis_url, model_dir, catalog_db, port, development=development)
    process = Process([PYTHON, "-m", "web_server"], env, var_dir / "web.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: http_ready(url + "/readyz") or process.proc.poll() is not None,
            timeout,
            "the monolith's /readyz",
        )
        if process.proc.poll() is not None:
            raise RuntimeError(f"the web server exited early:\n{process.log_tail()}")
    except BaseException:
        process.stop()
        raise
    return Server(url, process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module (module scope keeps Playwright's own event loop
    from outliving the browser tests while other suites' asyncio tests run)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=LAUNCH_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def monolith(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str, model_dir: Path, catalog_db: Path
) -> Iterator[Server]:
    """The whole system as one real process, shared by a module's tests (start-up is the slow
    part); each test logs in as its own user where state matters."""
    server = start_monolith(
        tmp_path_factory.mktemp("monolith"), redis_server, model_dir, catalog_db
    )
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def production_monolith(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str, model_dir: Path, catalog_db: Path
) -> Iterator[Server]:
    """The whole system as one real process with production settings: accounts only, no demo
    logins."""
    server = start_monolith(
        tmp_path_factory.mktemp("production"),
        redis_server,
        model_dir,
        catalog_db,
        development=False,
    )
    yield server
    server.process.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) at desktop width."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Save a screenshot of the test's page when the test itself failed."""
    outcome = yield
    report = outcome.get_result()
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None and not page.is_closed():
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
        path = ARTIFACTS / f"{name}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
            report.sections.append(("screenshot", str(path)))
        except Exception as exc:  # a crashed page must not hide the test's own failure
            report.sections.append(("screenshot", f"could not be saved: {exc}"))
