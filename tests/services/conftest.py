"""Fixtures for the catalog and subscription tests: settings, and real servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.platform.settings import Settings
from services.subscription.accounts import Accounts
from services.subscription.subscriptions import Subscriptions
from tests.pg import truncate
from tests.services.helpers import SECRET, SERVICE_TOKEN, SUBSCRIPTION_TABLES

Serve = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> str:
    """Every test here runs against both stores: the embedded SQLite and PostgreSQL."""
    return request.param


@pytest.fixture
async def database_url(store: str, request: pytest.FixtureRequest) -> str:
    """ "" for SQLite; for PostgreSQL the session's database, its subscription rows emptied."""
    if store == "sqlite":
        return ""
    url = request.getfixturevalue("postgres_url")
    await truncate(url, SUBSCRIPTION_TABLES)
    return url


@pytest.fixture
def settings(tmp_path: Path, catalog_db: Path, database_url: str) -> Settings:
    """Settings for one test; these services need neither the model nor Redis."""
    return Settings(
        var_dir=tmp_path,
        catalog_db=catalog_db,
        database_url=database_url,
        redis_url="",
        secret_key=SECRET,
        service_token=SERVICE_TOKEN,
        admin_token="test-admin-token",
        access_log=False,
    )


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an app on a real loopback socket (free port); every one started is closed after."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> TestServer:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def catalog_url(settings: Settings, serve: Serve) -> str:
    from services.catalog.app import create_app

    server = await serve(create_app(settings))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def subscription_url(settings: Settings, serve: Serve) -> str:
    from services.subscription.app import create_app

    server = await serve(create_app(settings))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def accounts(settings: Settings) -> AsyncIterator[Accounts]:
    """``Accounts`` over a freshly opened store (production settings: no demo logins), with
    small limits that never refill during a test: 3 failures per name, 6 per address, 4
    registrations per address."""
    subscriptions = await Subscriptions.open(settings)
    found = Accounts(
        subscriptions.store,
        settings,
        name_limit=(3, 1 / 3600),
        address_limit=(6, 1 / 3600),
        register_limit=(4, 1 / 3600),
    )
    yield found
    found.close()
    await subscriptions.close()
