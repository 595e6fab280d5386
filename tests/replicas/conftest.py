"""Fixtures for the replica tests: a PostgreSQL of the tests' own (they stop and restart it),
subscription replicas as real processes on one database, and a client that writes through them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.pg import PostgresInstance, PostgresServer, pg_bindir
from tests.support import (
    PYTHON,
    Process,
    async_wait_until,
    free_port,
    marquee_env,
)

SERVICE_TOKEN = "test-service-token"  # tests.support.TEST_SECRETS


@pytest.fixture(scope="package")
def own_postgres() -> Iterator[PostgresInstance]:
    """A PostgreSQL instance of our own on a free port (never the machine's shared one)."""
    if pg_bindir() is None:
        pytest.skip("no PostgreSQL server binaries here (Debian: apt-get install postgresql)")
    instance = PostgresInstance.create(free_port()).start()
    yield instance
    instance.remove()


@pytest.fixture
def own_database(own_postgres: PostgresInstance) -> Iterator[str]:
    """A fresh database on our own instance (started again if a test left it stopped)."""
    if not (own_postgres.datadir / "postmaster.pid").exists():
        own_postgres.start()
    server = PostgresServer(own_postgres.admin_url)
    url = server.create_database()
    yield url
    if not (own_postgres.datadir / "postmaster.pid").exists():
        own_postgres.start()
    server.drop_database(url)


async def http_ready(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp,
        ):
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


@dataclass
class Replicas:
    """Subscription replicas (``python -m services.subscription``) on one database."""

    tmp_path: Path
    database_url: str
    processes: list[Process] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    async def start(self, port: int | None = None) -> str:
        port = port or free_port()
        env = marquee_env(
            subscription_port=port,
            database_url=self.database_url,
            var_dir=self.tmp_path,
            log_level="WARNING",
        )
        log = self.tmp_path / f"subscription-{port}.log"
        process = Process([PYTHON, "-m", "services.subscription"], env, log).start()
        url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            assert process.proc is not None and process.proc.poll() is None, process.log_tail()
            return await http_ready(url)

        await async_wait_until(ready, 60, f"subscription replica on {port}")
        self.processes.append(process)
        self.urls.append(url)
        return url

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
async def replicas(tmp_path: Path, own_database: str) -> AsyncIterator[Replicas]:
    started = Replicas(tmp_path, own_database)
    yield started
    await asyncio.to_thread(started.stop)


WriteResult = tuple[int, dict, dict[str, str]]


async def put_plan(
    session: aiohttp.ClientSession, url: str, user: int, plan: str, key: str, timeout: float = 10
) -> WriteResult:
    """PUT a plan with the service token; (status, body, headers)."""
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}", "Idempotency-Key": key}
    async with session.put(
        f"{url}/v1/users/{user}/subscription",
        json={"plan": plan},
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def get_plan(session: aiohttp.ClientSession, url: str, user: int) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    async with session.get(
        f"{url}/v1/users/{user}/subscription",
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=10),
    ) as resp:
        return resp.status, await resp.json(content_type=None)
