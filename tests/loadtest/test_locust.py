"""Locust runs the locustfile against the real monolith for 20 s without one failure, from a
venv that holds Locust and nothing else (so the locustfile cannot lean on Marquee's
dependencies). The venv is built once per machine and Python version, then reused."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import replace
from tests.loadtest.conftest import ROOT

pytestmark = pytest.mark.locust

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "marquee"
VENV = CACHE / f"locust-py{sys.version_info.major}{sys.version_info.minor}"
NOT_LOCUST = ("numpy", "aiohttp", "hdrh", "orjson", "uvloop")


def _works(venv: Path) -> bool:
    if not (venv / ".complete").exists():
        return False
    try:
        done = subprocess.run([venv / "bin" / "locust", "--version"], capture_output=True,
                              timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="session")
def locust_venv() -> Path:
    """``python -m venv`` + ``pip install locust`` in place (a venv cannot be moved), marked
    complete only at the end, under a lock so two sessions do not build it at once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".locust.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _works(VENV):
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True, timeout=120)
            subprocess.run(
                [VENV / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "locust"],
                check=True,
                timeout=600,
            )
            (VENV / ".complete").touch()
    return VENV


@pytest.mark.timeout(900)
async def test_locust_runs_the_locustfile_for_20s_without_failures(
    locust_venv, settings, serve_app, tmp_path
):
    from web_server.app import create_app

    probe = subprocess.run(
        [locust_venv / "bin" / "python", "-c",
         f"import importlib.util as u; print([m for m in {NOT_LOCUST!r} if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.stdout.strip() == "[]", "the Locust venv must hold Locust only"

    url = await serve_app(create_app(replace(settings, mode="monolith")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MARQUEE_"))}
    proc = await asyncio.create_subprocess_exec(
        str(locust_venv / "bin" / "locust"), "-f", str(ROOT / "locustfile.py"), "--headless",
        "-u", "6", "-r", "6", "-t", "20s", "--host", url, "--csv", str(tmp_path / "run"),
        "--only-summary", "--loglevel", "WARNING",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    log = (out + err).decode(errors="replace")[-3000:]
    assert proc.returncode == 0, log
    with open(tmp_path / "run_stats.csv", newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    total = rows.pop("Aggregated")
    assert int(total["Request Count"]) > 50, log
    assert int(total["Failure Count"]) == 0, log
    # the tool's scenarios, as the real server answers them (a session posts login and plan)
    assert {"/movies/{id}", "/v1/similar/{id}", "/search", "/login", "/subscription"} <= set(rows)
