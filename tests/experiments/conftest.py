"""Fixtures of the experiment tests: events and batches, two registered model versions; and for
the replay (issue 16's "done when"), a chronological hold-out of the bundled data, the served
model and a popularity model both trained on its training side, and the monolith serving them
as a real process with a Redis of its own."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from recommender import redisconn
from recommender.app import RECOMMENDER, create_app
from recommender.box import RecommenderBox
from recommender.cli import main as recommender_main
from recommender.experiments import EXPERIMENTS
from recommender.redisconn import AsyncClient
from recommender.registry import ARTIFACT
from services.feedback.backend import Feedback
from services.feedback.schemas import Arm, Click, EventBatch, Experiment, Impression
from services.platform.settings import Settings
from tests.browser.conftest import Server, monolith_env, start_monolith
from tests.conftest import Versions
from tests.support import PROJECT_ROOT, PYTHON, free_port, start_redis

AT = 1_765_000_000.0  # a fixed instant: minute 29_416_666
MINUTE = int(AT // 60)

MakeBatch = Callable[..., EventBatch]


def impression(
    version: str, arm: Arm | None = "control", experiment: str | None = "e1", at: float = AT
) -> Impression:
    return Impression(uuid.uuid4().hex, version, experiment, arm, [1, 2, 3], at)


def click(
    version: str, arm: Arm | None = "control", experiment: str | None = "e1", at: float = AT
) -> Click:
    return Click(uuid.uuid4().hex, version, experiment, arm, 2, 2, at)


@pytest.fixture
def make_batch() -> MakeBatch:
    """``make_batch(impressions=3, clicks=1, version="v1", arm="control")``: a batch of that
    many events with a fresh random id."""

    def make(
        impressions: int = 1,
        clicks: int = 0,
        version: str = "v1",
        arm: Arm | None = "control",
        experiment: str | None = "e1",
        at: float = AT,
    ) -> EventBatch:
        events: list[Impression | Click] = [
            impression(version, arm, experiment, at) for _ in range(impressions)
        ]
        events += [click(version, arm, experiment, at) for _ in range(clicks)]
        return EventBatch(uuid.uuid4().hex, events)

    return make


def tamper(models: Path, version: str) -> None:
    """Flip one byte of a version's artifact (a private copy first: it may be hard-linked)."""
    path = models / "versions" / version / ARTIFACT
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.unlink()
    path.write_bytes(bytes(data))


@pytest.fixture
def exp_settings(settings: Settings, versions: Versions) -> Settings:
    """The test settings on the private registry, re-verifying served bytes often."""
    return dataclasses.replace(settings, model_dir=versions.models, model_verify_interval=0.2)


def new_experiment(versions: Versions, share: float = 0.5) -> Experiment:
    return Experiment(
        id=f"e-{uuid.uuid4().hex[:6]}",
        control=versions.control,
        candidate=versions.candidate,
        share=share,
        salt="salt",
        started="2026-12-07T07:00:00Z",
    )


@dataclass
class Served:
    """A recommender app on a loopback port."""

    url: str
    app: web.Application

    @property
    def box(self) -> RecommenderBox:
        return self.app[RECOMMENDER]

    @property
    def feedback(self) -> Feedback:
        feedback = self.app[EXPERIMENTS].feedback
        assert feedback is not None
        return feedback


@pytest.fixture
async def served(
    exp_settings: Settings, serve_app: Callable[[web.Application], Awaitable[str]]
) -> Served:
    app = create_app(exp_settings)
    return Served(await serve_app(app), app)


@pytest.fixture
async def state(redis_url: str) -> AsyncIterator[AsyncClient]:
    """A bytes client on the test's Redis."""
    client = redisconn.connect(redis_url)
    yield client
    await client.aclose()


# ---- the replay -------------------------------------------------------------------------------
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
