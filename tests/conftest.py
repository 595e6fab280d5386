"""Fixtures every test area shares: a real Redis, settings on temporary paths, a trained model."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from recommender.registry import ModelRegistry
from services.platform.settings import PROJECT_ROOT, Settings
from tests.pg import PostgresServer, shared_or_own
from tests.support import GENEROUS, TEST_SECRETS, free_port, start_redis

DATA_DIR = PROJECT_ROOT / "data" / "ml-latest-small"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of our own on a free port, for the whole session."""
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied so no test sees another's keys."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained once per session on the bundled data (ratings, movies and tags) and
    published in a registry."""
    from recommender.data import data_hash, load_catalog, load_ratings
    from recommender.model import fit
    from recommender.registry import ModelRegistry

    ratings = DATA_DIR / "ratings.csv"
    directory = tmp_path_factory.mktemp("models")
    started = time.perf_counter()
    model = fit(load_ratings(ratings), catalog=load_catalog(DATA_DIR / "movies.csv"))
    ModelRegistry(directory).register(
        model,
        data_hash=data_hash(ratings),
        metrics={},
        trained_seconds=time.perf_counter() - started,
    )
    return directory


@pytest.fixture(scope="session")
def catalog_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The catalog's SQLite store, built once per session from the bundled data."""
    from services.catalog.store import build_catalog_db

    path = tmp_path_factory.mktemp("catalog") / "catalog.sqlite3"
    build_catalog_db(DATA_DIR, path)
    return path


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, model_dir: Path, catalog_db: Path) -> Settings:
    """Settings for one test: its own var dir and subscription store, shared read-only data.
    Development settings: the tests log in as MovieLens users by id (demo logins)."""
    return Settings(
        development=True,
        var_dir=tmp_path,
        catalog_db=catalog_db,
        model_dir=model_dir,
        redis_url=redis_url,
        **TEST_SECRETS,
        access_log=False,
        breaker_reset=0.5,
        **GENEROUS,
    )


def replace(settings: Settings, **changes: object) -> Settings:
    return dataclasses.replace(settings, **changes)


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Start any aiohttp app on a free loopback port; returns its base URL; closed afterwards."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The machine's PostgreSQL (127.0.0.1:5432) when it answers, else one we start; every
    database made through it is dropped at the end of the session."""
    server = shared_or_own()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh database for this test session (dropped with the ``postgres`` fixture)."""
    return postgres.create_database()


@dataclass(frozen=True)
class Versions:
    """A private registry with two versions: ``control`` published, ``candidate`` registered."""

    models: Path
    control: str
    candidate: str

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.models)


@pytest.fixture
def versions(model_dir: Path, tmp_path: Path) -> Versions:
    models = tmp_path / "models"
    shutil.copytree(model_dir, models, symlinks=True)
    registry = ModelRegistry(models)
    control = registry.current_version()
    assert control is not None
    model, manifest = registry.load(control)
    candidate = registry.register(
        model, data_hash=manifest.data_hash, metrics={}, trained_seconds=0.0, publish=False
    ).version
    return Versions(models, control, candidate)
