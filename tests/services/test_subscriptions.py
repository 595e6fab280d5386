"""``Subscriptions`` called in-process (as the monolith does), on SQLite and on PostgreSQL:
idempotency, keys per user, expiry, concurrent writers, migrations, the file's permissions."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgspec
import pytest

from services.platform.errors import BadRequest, Conflict
from services.platform.postgres import migrations
from services.platform.settings import Settings
from services.subscription.store import MIGRATIONS
from services.subscription.subscriptions import Subscriptions, request_fingerprint
from tests.services.helpers import query

DAY = 24 * 3600


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def subs(settings: Settings, clock: Clock) -> AsyncIterator[Subscriptions]:
    store = await Subscriptions.open(settings, clock=clock)
    yield store
    await store.close()


async def test_put_then_get_returns_the_plan(subs: Subscriptions) -> None:
    written = await subs.put(5, "premium", "k1")
    assert await subs.get(5) == written
    assert written.plan.price_cents == 1799


async def test_cancel_of_a_user_without_subscription_answers_none(subs: Subscriptions) -> None:
    assert (await subs.cancel(5, "k1")).status == "none"


async def test_same_key_for_cancel_and_put_is_409(subs: Subscriptions) -> None:
    await subs.put(5, "basic", "k1")
    with pytest.raises(Conflict):
        await subs.cancel(5, "k1")


async def test_two_users_may_use_the_same_key(subs: Subscriptions) -> None:
    """Keys are scoped per user: user 6 reusing user 5's key is a new request of user 6."""
    await subs.put(5, "basic", "shared-key")
    assert (await subs.put(6, "premium", "shared-key")).plan.id == "premium"
    assert (await subs.cancel(7, "shared-key")).status == "none"
    assert (await subs.get(5)).plan.id == "basic"
    assert (await subs.get(6)).plan.id == "premium"


async def test_key_older_than_a_day_is_forgotten(subs: Subscriptions, clock: Clock) -> None:
    await subs.put(5, "basic", "k1")
    clock.now += DAY + 1
    assert (await subs.put(5, "premium", "k1")).plan.id == "premium"


async def test_expired_keys_are_purged(
    subs: Subscriptions, clock: Clock, settings: Settings
) -> None:
    await subs.put(5, "basic", "old")
    clock.now += DAY + 1
    await subs.put(6, "basic", "new")
    assert await query(settings, "SELECT key FROM idempotency_keys") == [("new",)]


async def test_every_applied_write_is_one_event_and_a_retry_adds_none(
    subs: Subscriptions, settings: Settings
) -> None:
    await subs.put(5, "basic", "k1")
    await subs.put(5, "basic", "k1")  # a retry
    await subs.put(5, "premium", "k2")
    await subs.cancel(5, "k3")
    events = await query(
        settings,
        "SELECT idempotency_key, method, plan_id, status FROM subscription_events ORDER BY id",
    )
    assert events == [
        ("k1", "PUT", "basic", "active"),
        ("k2", "PUT", "premium", "active"),
        ("k3", "DELETE", None, "none"),
    ]


async def test_refused_write_records_nothing(subs: Subscriptions, settings: Settings) -> None:
    with pytest.raises(BadRequest):
        await subs.put(5, "gold", "k1")
    assert await query(settings, "SELECT count(*) FROM idempotency_keys") == [(0,)]
    assert await query(settings, "SELECT count(*) FROM subscription_events") == [(0,)]
    assert (await subs.get(5)).status == "none"


@pytest.mark.parametrize("user_id", [0, -1, 2**40, True, "5"])
async def test_bad_user_id_is_rejected(subs: Subscriptions, user_id: object) -> None:
    with pytest.raises(BadRequest):
        await subs.get(user_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["", None, "x" * 201, "ключ", "a\nb"])
async def test_bad_idempotency_key_is_rejected(subs: Subscriptions, key: object) -> None:
    with pytest.raises(BadRequest):
        await subs.put(5, "basic", key)  # type: ignore[arg-type]


async def test_plans_cannot_be_changed_by_callers(subs: Subscriptions) -> None:
    plan = subs.plans()[0]
    with pytest.raises(AttributeError):
        plan.features = ("free popcorn",)  # type: ignore[misc]
    assert isinstance(plan.features, tuple)  # and nothing inside can be appended to


async def test_same_key_sent_to_two_replicas_at_once_applies_once(settings: Settings) -> None:
    """Two stores (two pools, or two SQLite connections) racing on the same users' keys."""
    replicas = [await Subscriptions.open(settings) for _ in range(2)]
    try:
        users = range(1, 31)
        answers = await asyncio.gather(
            *(r.put(u, "standard", f"race-{u}") for u in users for r in replicas)
        )
    finally:
        for replica in replicas:
            await replica.close()
    by_user: dict[int, list[dict]] = {}
    for answer in answers:
        by_user.setdefault(answer.user_id, []).append(answer)
    assert all(a == b for a, b in by_user.values())  # the second got the first's response
    events = await query(
        settings, "SELECT user_id, count(*) FROM subscription_events GROUP BY user_id"
    )
    assert sorted(events) == [(u, 1) for u in users]


def _writer(settings: Settings, users: range) -> list[str]:
    """One process's writes; every request is sent twice, as a retrying client would."""

    async def run() -> list[str]:
        store = await Subscriptions.open(settings)
        try:
            plans = []
            for user in users:
                for _ in range(2):
                    plans.append((await store.put(user, "standard", f"put-{user}")).plan.id)
                await store.put(user, "premium", f"upgrade-{user}")
            return plans
        finally:
            await store.close()

    return asyncio.run(run())


async def test_writers_in_several_processes_each_apply_once(settings: Settings) -> None:
    users = range(1, 41)
    with ProcessPoolExecutor(max_workers=2) as pool:
        # Both processes send the same requests with the same keys, interleaved.
        results = await asyncio.gather(
            *(
                asyncio.get_running_loop().run_in_executor(pool, _writer, settings, users)
                for _ in range(2)
            )
        )
    assert all(plan == "standard" for plans in results for plan in plans)
    store = await Subscriptions.open(settings)
    try:
        assert {(await store.get(u)).plan.id for u in users} == {"premium"}
    finally:
        await store.close()
    assert await query(settings, "SELECT count(*) FROM idempotency_keys") == [(80,)]
    assert await query(settings, "SELECT count(*) FROM subscription_events") == [(80,)]


# ---- SQLite only: the file ----------------------------------------------------------------
@pytest.fixture
def sqlite_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, database_url="")


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_sqlite_file_is_readable_by_its_owner_only(sqlite_settings: Settings) -> None:
    subs = await Subscriptions.open(sqlite_settings)
    try:
        await subs.put(5, "basic", "k1")
        db = Path(sqlite_settings.subscription_db)
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files if f.exists()}
    finally:
        await subs.close()
    assert modes[db.name] == 0o600
    assert set(modes.values()) == {0o600}, modes


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_sqlite_file_made_readable_by_others_is_tightened(sqlite_settings: Settings) -> None:
    db = Path(sqlite_settings.subscription_db)
    sqlite3.connect(db).close()
    db.chmod(0o644)
    subs = await Subscriptions.open(sqlite_settings)
    await subs.close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


LEGACY_SCHEMA = """
CREATE TABLE plans (id TEXT PRIMARY KEY, position INTEGER NOT NULL, name TEXT NOT NULL,
    price_cents INTEGER NOT NULL, currency TEXT NOT NULL, features TEXT NOT NULL);
CREATE TABLE subscriptions (user_id INTEGER PRIMARY KEY, plan_id TEXT REFERENCES plans(id),
    status TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, user_id INTEGER NOT NULL,
    method TEXT NOT NULL, fingerprint TEXT NOT NULL, response TEXT NOT NULL,
    created_at REAL NOT NULL);
"""


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_store_made_before_migrations_is_migrated_keeping_its_keys(
    sqlite_settings: Settings, clock: Clock
) -> None:
    db = sqlite3.connect(sqlite_settings.subscription_db)
    db.executescript(LEGACY_SCHEMA)
    recorded = {  # an answer as the service sent it then: replayed as it was, not recomputed
        "user_id": 5,
        "status": "active",
        "plan": {
            "id": "basic",
            "name": "Basic (2024)",
            "price_cents": 699,
            "currency": "EUR",
            "features": ["HD"],
        },
        "updated_at": "2024-05-01T10:00:00.000+00:00",
    }
    db.execute(
        "INSERT INTO idempotency_keys VALUES ('k1', 5, 'PUT', ?, ?, ?)",
        (request_fingerprint("PUT", 5, "basic"), json.dumps(recorded), clock.now),
    )
    db.commit()
    db.close()
    subs = await Subscriptions.open(sqlite_settings, clock=clock)
    try:
        replayed = await subs.put(5, "basic", "k1")
        assert json.loads(msgspec.json.encode(replayed)) == recorded
        assert (await subs.put(6, "basic", "k1")).plan.id == "basic"  # per user now
    finally:
        await subs.close()
    version = await query(sqlite_settings, "PRAGMA user_version")
    assert version == [(max(m.version for m in migrations(MIGRATIONS / "sqlite")),)]
