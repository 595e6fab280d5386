"""Durability on PostgreSQL: an acknowledged write survives ``kill -9`` of the replica that
acknowledged it and a restart of the database; while the database is down, writes fail at once
with 503 + Retry-After and pages show the plan box degraded; both recover by themselves."""

from __future__ import annotations

import asyncio
import dataclasses
import signal

import aiohttp
import asyncpg
import pytest

from services.platform import auth
from services.platform.settings import Settings
from tests.pg import PostgresInstance
from tests.replicas.conftest import Replicas, get_plan, put_plan
from tests.support import TEST_SECRETS, async_wait_until

RECOVERY = 30.0  # seconds allowed for reads to come back after the database does (expect ~1 s)


async def events_per_user(url: str) -> dict[int, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT user_id, count(*) FROM subscription_events GROUP BY 1")
    finally:
        await conn.close()
    return {r[0]: r[1] for r in rows}


async def test_acknowledged_writes_survive_kill_9_of_the_replica(
    replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    url = await replicas.start()
    users = range(1, 201)
    answered: dict[int, int | None] = {}

    async def write(user: int) -> None:
        try:
            status, _, _ = await put_plan(http, url, user, "standard", f"k-{user}")
        except (aiohttp.ClientError, TimeoutError, OSError):
            status = None
        answered[user] = status

    tasks = [asyncio.create_task(write(u)) for u in users]

    async def some_acknowledged() -> bool:
        return sum(1 for s in answered.values() if s == 200) >= 20

    await async_wait_until(some_acknowledged, 60, "20 acknowledged writes")
    replicas.processes[0].signal(signal.SIGKILL)  # mid-run: the rest are in flight or unsent
    await asyncio.gather(*tasks)
    acknowledged = {u for u, s in answered.items() if s == 200}

    survivor = await replicas.start()
    for user in acknowledged:
        status, body = await get_plan(http, survivor, user)
        assert (status, body["plan"]["id"]) == (200, "standard"), user
    # The client retries whatever got no answer, with the same keys: nothing applies twice.
    for user in users:
        status, body, _ = await put_plan(http, survivor, user, "standard", f"k-{user}")
        assert (status, body["plan"]["id"]) == (200, "standard"), user
    assert await events_per_user(replicas.database_url) == {u: 1 for u in users}


async def test_acknowledged_writes_survive_a_postgres_restart(
    replicas: Replicas, own_postgres: PostgresInstance, http: aiohttp.ClientSession
) -> None:
    url = await replicas.start()
    users = range(1, 51)
    for user in users:
        status, _, _ = await put_plan(http, url, user, "premium", f"k-{user}")
        assert status == 200
    await asyncio.to_thread(own_postgres.restart)

    async def reads_again() -> bool:
        status, _ = await get_plan(http, url, users[0])
        return status == 200

    await async_wait_until(reads_again, RECOVERY, "reads after the database restarted")
    for user in users:
        status, body = await get_plan(http, url, user)
        assert (status, body["plan"]["id"]) == (200, "premium"), user


async def test_while_postgres_is_down_writes_fail_at_once_with_503_and_retry_after(
    replicas: Replicas, own_postgres: PostgresInstance, http: aiohttp.ClientSession
) -> None:
    url = await replicas.start()
    assert (await put_plan(http, url, 7, "basic", "before"))[0] == 200
    await asyncio.to_thread(own_postgres.stop)
    try:
        status, body, headers = await put_plan(http, url, 7, "premium", "during")
        assert (status, body["error"]["code"]) == (503, "database_unavailable")
        assert int(headers["Retry-After"]) > 0
        status, body = await get_plan(http, url, 7)
        assert (status, body["error"]["code"]) == (503, "database_unavailable")
    finally:
        await asyncio.to_thread(own_postgres.start)

    async def reads_again() -> bool:
        return (await get_plan(http, url, 7))[0] == 200

    await async_wait_until(reads_again, RECOVERY, "reads after the database came back")
    status, body, _ = await put_plan(http, url, 7, "premium", "during")  # the client's retry
    assert (status, body["plan"]["id"]) == (200, "premium")
    assert await events_per_user(replicas.database_url) == {7: 2}


@pytest.fixture
def pg_monolith(settings: Settings, own_database: str) -> Settings:
    """The monolith with its subscriptions (and catalog) in our own PostgreSQL."""
    return dataclasses.replace(settings, database_url=own_database)


async def test_page_shows_the_plan_degraded_while_postgres_is_down_and_recovers(
    pg_monolith: Settings,
    own_postgres: PostgresInstance,
    serve_app,
    http: aiohttp.ClientSession,
) -> None:
    from web_server.app import create_app

    base = await serve_app(create_app(pg_monolith))
    cookie = {"Cookie": f"marquee_session={auth.session_token(5, TEST_SECRETS['secret_key'])}"}

    async def page() -> dict:
        async with http.get(f"{base}/api/pages/movies/1", headers=cookie) as resp:
            assert resp.status == 200
            return await resp.json()

    assert (await page())["degraded"] == []
    await asyncio.to_thread(own_postgres.stop)
    try:
        down = await page()
        assert "plan" in down["degraded"]
        assert down["movie"]["title"] == "Toy Story"  # the catalog serves from memory
    finally:
        await asyncio.to_thread(own_postgres.start)

    async def whole() -> bool:
        return (await page())["degraded"] == []

    await async_wait_until(whole, RECOVERY, "the page whole again")
