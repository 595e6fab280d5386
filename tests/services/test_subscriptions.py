"""``Subscriptions`` called in-process (as the monolith does): idempotency, expiry, concurrency."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from services.platform.errors import BadRequest, Conflict
from services.subscription.subscriptions import Subscriptions

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
def subs(tmp_path: Path, clock: Clock) -> Iterator[Subscriptions]:
    store = Subscriptions(tmp_path / "subs.sqlite3", clock=clock)
    yield store
    store.close()


def test_put_then_get_returns_the_plan(subs: Subscriptions) -> None:
    written = subs.put(5, "premium", "k1")
    assert subs.get(5) == written
    assert written["plan"]["price_cents"] == 1799


def test_cancel_of_a_user_without_subscription_answers_none(subs: Subscriptions) -> None:
    assert subs.cancel(5, "k1")["status"] == "none"


def test_same_key_for_cancel_and_put_is_409(subs: Subscriptions) -> None:
    subs.put(5, "basic", "k1")
    with pytest.raises(Conflict):
        subs.cancel(5, "k1")


def test_key_older_than_a_day_is_forgotten(subs: Subscriptions, clock: Clock) -> None:
    subs.put(5, "basic", "k1")
    clock.now += DAY + 1
    assert subs.put(5, "premium", "k1")["plan"]["id"] == "premium"


def test_expired_keys_are_purged(subs: Subscriptions, clock: Clock, tmp_path: Path) -> None:
    subs.put(5, "basic", "old")
    clock.now += DAY + 1
    subs.put(6, "basic", "new")
    conn = sqlite3.connect(tmp_path / "subs.sqlite3")
    try:
        keys = [r[0] for r in conn.execute("SELECT key FROM idempotency_keys")]
    finally:
        conn.close()
    assert keys == ["new"]


@pytest.mark.parametrize("user_id", [0, -1, 2**40, True, "5"])
def test_bad_user_id_is_rejected(subs: Subscriptions, user_id: object) -> None:
    with pytest.raises(BadRequest):
        subs.get(user_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["", None, "x" * 201, "ключ", "a\nb"])
def test_bad_idempotency_key_is_rejected(subs: Subscriptions, key: object) -> None:
    with pytest.raises(BadRequest):
        subs.put(5, "basic", key)  # type: ignore[arg-type]


def test_plans_are_copies_callers_may_change(subs: Subscriptions) -> None:
    subs.plans()[0]["features"].append("free popcorn")
    assert "free popcorn" not in subs.plans()[0]["features"]


def _writer(db: Path, users: range) -> list[str]:
    """One process's writes; every request is sent twice, as a retrying client would."""
    store = Subscriptions(db)
    try:
        plans = []
        for user in users:
            for _ in range(2):
                plans.append(store.put(user, "standard", f"put-{user}")["plan"]["id"])
            store.put(user, "premium", f"upgrade-{user}")
        return plans
    finally:
        store.close()


def test_writers_in_several_processes_each_apply_once(tmp_path: Path) -> None:
    db = tmp_path / "subs.sqlite3"
    users = range(1, 41)
    with ProcessPoolExecutor(max_workers=2) as pool:
        # Both processes send the same requests with the same keys, interleaved.
        results = list(pool.map(_writer, [db, db], [users, users]))
    assert all(plan == "standard" for plans in results for plan in plans)
    store = Subscriptions(db)
    try:
        assert {store.get(u)["plan"]["id"] for u in users} == {"premium"}
    finally:
        store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 80
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
