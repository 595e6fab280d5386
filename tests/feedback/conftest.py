"""Fixtures for the web side of feedback events: the web server (monolith on the real model and
Redis, or microservices over the stub backends) that can be stopped and started again, a look
into the state Redis's event stream, and an experiment to be in."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.feedback.backend import experiment_path
from services.feedback.schemas import Event, EventBatch, Experiment, FeedbackKeys
from services.platform.settings import Settings
from tests.experiments.conftest import exp_settings  # noqa: F401 - the experiments suite's fixture
from tests.support import PYTHON, Process, free_port, http_ready, marquee_env, wait_until
from tests.web.conftest import (
    Stubs,
    stub_backends,  # noqa: F401 - the web suite's fixture, reused
    stub_settings,
)

SIMILAR_SECTION = re.compile(r'<section class="shelf similar".*?</section>', re.S)
TRACKED = re.compile(r'href="/r/([^/"]+)/(\d+)"')


def tracked_links(page: str) -> list[tuple[str, int]]:
    """(token, movie id) of each link in the page's similar row, as the replay tool reads them."""
    section = SIMILAR_SECTION.search(page)
    assert section, "no similar row on the page"
    return [(token, int(movie)) for token, movie in TRACKED.findall(section.group(0))]


@dataclass
class Web:
    url: str
    app: web.Application
    server: TestServer

    async def stop(self) -> None:
        """Shut down as SIGTERM does: every cleanup_ctx runs (the event buffer's last flush)."""
        await self.server.close()


@pytest.fixture
async def start_web() -> AsyncIterator[Callable[[Settings], Awaitable[Web]]]:
    """Start ``create_app(settings)`` on a free loopback port, as often as a test wants (a
    restart is a stop and a start with the same settings); all stopped afterwards."""
    from web_server.app import create_app

    servers: list[TestServer] = []

    async def start(settings: Settings) -> Web:
        app = create_app(settings)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Web(str(server.make_url("")).rstrip("/"), app, server)

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
def monolith_settings(settings: Settings) -> Settings:
    """The shared settings: monolith, the real model, the test Redis as cache and state."""
    return settings


@pytest.fixture
def keys(monolith_settings: Settings) -> FeedbackKeys:
    return FeedbackKeys(monolith_settings.redis_namespace)


@pytest.fixture
def state(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def stream_events(client: redis.Redis, keys: FeedbackKeys) -> list[Event]:
    """Every event in the stream, batch after batch."""
    decode = msgspec.json.Decoder(EventBatch).decode
    events: list[Event] = []
    for _, fields in client.xrange(keys.stream):
        events.extend(decode(fields[b"b"]).events)
    return events


def experiment(share: float = 0.5, version: str = "stub") -> Experiment:
    return Experiment(
        id="exp-1",
        control=version,
        candidate=version,
        share=share,
        salt="seeded-salt",
        started="2026-12-07T00:00:00Z",
    )


def write_experiment(settings: Settings, running: Experiment) -> None:
    """Start an experiment for a process without Redis (the store's file in the var dir)."""
    path = experiment_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(running))


@pytest.fixture
def stub_web_settings(tmp_path: Path, stub_backends: Stubs) -> Settings:  # noqa: F811
    """Microservices mode over the stub backends, no Redis at all (the file stores)."""
    return stub_settings(tmp_path, stub_backends)


def replace(settings: Settings, **changes: object) -> Settings:
    return dataclasses.replace(settings, **changes)


@dataclass
class WebProcess:
    url: str
    process: Process


@pytest.fixture
def web_process(tmp_path: Path, monolith_settings: Settings) -> Iterator[Callable[..., WebProcess]]:
    """``python -m web_server`` (monolith) as a real process on the test Redis, with extra
    settings. Stopped (SIGTERM, by PID) afterwards unless the test stopped it."""
    processes: list[Process] = []

    def start(**changes: object) -> WebProcess:
        port = free_port()
        env = marquee_env(
            development=True,
            mode="monolith",
            web_port=port,
            var_dir=monolith_settings.var_dir,
            catalog_db=monolith_settings.catalog_db,
            model_dir=monolith_settings.model_dir,
            redis_url=monolith_settings.redis_url,
            **changes,
        )
        process = Process([PYTHON, "-m", "web_server"], env, tmp_path / "web.log").start()
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_ready(url + "/readyz") or process.proc.poll() is not None,
            60.0,
            "the web server's /readyz",
        )
        assert process.proc.poll() is None, process.log_tail()
        return WebProcess(url, process)

    yield start
    for process in processes:
        process.stop()
