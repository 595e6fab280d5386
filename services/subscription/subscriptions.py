"""Subscriptions: the plans, and each user's current plan, changed by idempotent writes.

This class is the one home of the behaviour: the HTTP routes (which check who may call) and the
monolith's in-process client (whose web server checks the session itself) both call it, so it takes
no credentials. It runs the same over either store (SQLite or PostgreSQL, ``store.py``). A write
is one transaction: look up the user's Idempotency-Key, apply the change, record the key with its
response and the event. A retry with the same key answers the recorded response and changes
nothing, even when the state has moved on since; a key reused for a different request is refused
with 409. Keys belong to a user: two users may use the same key without meeting.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import orjson

from services.platform.errors import BadRequest, Conflict
from services.platform.params import MAX_ID
from services.platform.settings import Settings
from services.subscription.schemas import Plan, Subscription
from services.subscription.store import Row, Store, StoredKey, open_store

MAX_KEY_LENGTH = 200
ACTIVE = "active"
NONE = "none"


def check_user_id(user_id: object) -> int:
    if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 < user_id <= MAX_ID:
        raise BadRequest(f"user id must be a positive integer, got {user_id!r}", code="invalid_id")
    return user_id


def check_idempotency_key(key: object) -> str:
    if key is None or key == "":
        raise BadRequest(
            "writes need an Idempotency-Key header (any unique string, e.g. a UUID)",
            code="idempotency_key_required",
        )
    if (
        not isinstance(key, str)
        or len(key) > MAX_KEY_LENGTH
        or not key.isascii()
        or not key.isprintable()
    ):
        raise BadRequest(
            f"Idempotency-Key must be printable ASCII of at most {MAX_KEY_LENGTH} characters",
            code="invalid_idempotency_key",
        )
    return key


def request_fingerprint(method: str, user_id: int, plan_id: str | None) -> str:
    body = orjson.dumps({"method": method, "user_id": user_id, "plan": plan_id})
    return hashlib.sha256(body).hexdigest()


def iso_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")


class Subscriptions:
    """Plans and subscriptions over a store; open one with ``await Subscriptions.open(...)``."""

    def __init__(
        self, store: Store, plans: list[Plan], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._clock = clock
        self._plans = {p.id: p for p in plans}

    @classmethod
    async def open(
        cls, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> Subscriptions:
        """The store ``settings`` choose (PostgreSQL by ``database_url``, else SQLite)."""
        store = await open_store(settings)
        try:
            plans = await store.load_plans()
        except BaseException:
            await store.close()
            raise
        return cls(store, plans, clock=clock)

    @property
    def store(self) -> Store:
        return self._store

    @property
    def is_open(self) -> bool:
        return self._store.is_open

    async def close(self) -> None:
        await self._store.close()

    def plans(self) -> list[Plan]:
        return list(self._plans.values())

    def plan(self, plan_id: object) -> Plan:
        if not isinstance(plan_id, str) or plan_id not in self._plans:
            known = ", ".join(self._plans)
            raise BadRequest(f"unknown plan {plan_id!r}; plans are: {known}", code="unknown_plan")
        return self._plans[plan_id]

    async def get(self, user_id: int) -> Subscription:
        check_user_id(user_id)
        return self._view(user_id, await self._store.load(user_id))

    async def put(self, user_id: int, plan_id: str, idempotency_key: str | None) -> Subscription:
        """Put the user on ``plan_id`` (subscribe or change plan)."""
        check_user_id(user_id)
        key = check_idempotency_key(idempotency_key)
        if not isinstance(plan_id, str):
            raise BadRequest('plan must be a string, e.g. "standard"', code="invalid_body")
        return await self._write(user_id, "PUT", plan_id, key)

    async def cancel(self, user_id: int, idempotency_key: str | None) -> Subscription:
        """End the user's subscription (a no-op answer for a user without one)."""
        check_user_id(user_id)
        key = check_idempotency_key(idempotency_key)
        return await self._write(user_id, "DELETE", None, key)

    async def _write(
        self, user_id: int, method: str, plan_id: str | None, key: str
    ) -> Subscription:
        fingerprint = request_fingerprint(method, user_id, plan_id)
        now = self._clock()
        async with self._store.write(user_id) as tx:
            stored = await tx.load_key(key, now)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise Conflict(
                        "this Idempotency-Key was already used for a different request; "
                        "use a new key for a new request",
                        code="idempotency_key_reused",
                    )
                return msgspec.convert(stored.response, Subscription)
            if plan_id is not None:
                self.plan(plan_id)
            row = Row(plan_id, ACTIVE if plan_id is not None else NONE, iso_now(now))
            response = self._view(user_id, row)
            stored = StoredKey(method, fingerprint, msgspec.to_builtins(response))
            await tx.save(key, stored, row, now)
        return response

    def _view(self, user_id: int, row: Row | None) -> Subscription:
        if row is None:
            return Subscription(user_id=user_id, status=NONE, plan=None, updated_at=None)
        active = row.status == ACTIVE and row.plan_id in self._plans
        return Subscription(
            user_id=user_id,
            status=ACTIVE if active else NONE,
            plan=self.plan(row.plan_id) if active else None,
            updated_at=row.updated_at,
        )
