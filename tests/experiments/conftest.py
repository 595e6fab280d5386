"""Fixtures of the experiment tests.

The replay (issue 16's "done when"): a chronological hold-out of the bundled data, the served
model and a popularity model both trained on its training side, and the monolith serving them
as a real process with a Redis of its own.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recommender.cli import main as recommender_main
from tests.browser.conftest import Server, monolith_env, start_monolith
from tests.support import PROJECT_ROOT, PYTHON, free_port, start_redis

DATA_DIR = PROJECT_ROOT / "data" / "ml-latest-small"


def run_python(env: dict[str, str], *args: str, timeout: float = 600.0) -> str:
    """``python <args>`` in ``env``; its stdout. Fails the test when the command fails."""
    proc = subprocess.run(
        [PYTHON, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


@dataclass
class ReplaySetup:
    """The hold-out, the two versions (the served model, published; the popularity model,
    registered), the running monolith and the environment its CLI commands need."""

    holdout: Path  # the out dir: ratings.csv, holdout.csv, split.json
    model_dir: Path
    served: str
    popularity: str
    server: Server
    env: dict[str, str]  # the monolith's: the same registry, var dir and Redis


@pytest.fixture(scope="module")
def replay_setup(
    tmp_path_factory: pytest.TempPathFactory, catalog_db: Path
) -> Iterator[ReplaySetup]:
    root = tmp_path_factory.mktemp("replay")
    holdout = root / "holdout"
    ratings = str(DATA_DIR / "ratings.csv")
    assert recommender_main(["holdout", "--ratings", ratings, "--out-dir", str(holdout)]) == 0
    model_dir, var_dir = root / "models", root / "var"
    var_dir.mkdir()
    port = free_port()
    redis = start_redis(port, root)
    try:
        redis_url = f"redis://127.0.0.1:{port}/0"
        env = monolith_env(var_dir, redis_url, model_dir, catalog_db, free_port())
        train = ("-m", "recommender", "train", "--ratings", str(holdout / "ratings.csv"), "--quiet")
        served = run_python(env, *train).strip()
        popularity = run_python(env, *train, "--algorithm", "popularity", "--no-publish").strip()
        server = start_monolith(var_dir, redis_url, model_dir, catalog_db)
        try:
            yield ReplaySetup(holdout, model_dir, served, popularity, server, env)
        finally:
            server.process.stop()
    finally:
        redis.stop()
