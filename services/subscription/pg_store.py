"""The subscription store on PostgreSQL: one database that every subscription replica shares.

A write is one transaction that first takes a transaction-scoped advisory lock on the user
(``pg_advisory_xact_lock``): two replicas handling the same user's writes — the same
Idempotency-Key sent to both at once, say — run one after the other, so the second finds the
first's key and answers its stored response (or 409). The primary key ``(user_id, key)`` of
``idempotency_keys`` is the backstop: a key can be recorded once, whatever happens.

While the database is unreachable every call fails within the connect timeout with
``DatabaseUnavailable`` (503 + Retry-After); the pool reconnects by itself when it returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
import orjson

from services.platform.postgres import (
    DatabaseUnavailable,
    migrate,
    open_pool,
    unavailable_as_503,
)
from services.subscription.schemas import Plan
from services.subscription.store import (
    IDEMPOTENCY_TTL,
    MIGRATIONS,
    PLANS,
    AccountRow,
    Row,
    StoredKey,
    WriteTransaction,
    plan_rows,
)

COMPONENT = "subscription"
USER_LOCK_SPACE = 0x5B5C  # first key of pg_advisory_xact_lock(int, int): "subscription users"
PURGE_BATCH = 100  # expired keys deleted per write, skipping rows another write is deleting


async def migrate_subscriptions(conn: asyncpg.Connection) -> list[int]:
    return await migrate(conn, COMPONENT, MIGRATIONS / "postgresql")


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool: asyncpg.Pool | None = pool

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Open the pool, apply missing migrations and seed the plans (every replica may do it
        at once: migrations wait on an advisory lock, the plans are an upsert)."""
        pool = await open_pool(url)
        try:
            async with pool.acquire() as conn:
                await migrate_subscriptions(conn)
                await conn.executemany(
                    "INSERT INTO plans VALUES ($1, $2, $3, $4, $5, $6::jsonb) "
                    "ON CONFLICT (id) DO UPDATE SET position = excluded.position, "
                    "name = excluded.name, price_cents = excluded.price_cents, "
                    "currency = excluded.currency, features = excluded.features",
                    plan_rows(PLANS),
                )
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseUnavailable("the subscription store is closed")
        return self._pool

    async def load_plans(self) -> list[Plan]:
        async with unavailable_as_503("reading the plans"):
            rows = await self.pool.fetch(
                "SELECT id, name, price_cents, currency, features FROM plans ORDER BY position"
            )
        return [Plan(r[0], r[1], r[2], r[3], tuple(orjson.loads(r[4]))) for r in rows]

    async def load(self, user_id: int) -> Row | None:
        async with unavailable_as_503("reading the subscription"):
            row = await self.pool.fetchrow(
                "SELECT plan_id, status, updated_at FROM subscriptions WHERE user_id = $1",
                user_id,
            )
        return None if row is None else Row(row[0], row[1], _iso(row[2]))

    @asynccontextmanager
    async def write(self, user_id: int) -> AsyncIterator[WriteTransaction]:
        async with (
            unavailable_as_503("changing the subscription"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", USER_LOCK_SPACE, user_id)
            yield _PostgresWrite(conn, user_id)

    # ---- accounts and session generations ---------------------------------------------------
    async def create_account(
        self, name: str, name_key: str, password_hash: str, now: float
    ) -> int | None:
        # The identity column numbers accounts (from 1,000,000); the unique name_key decides
        # between two replicas registering one name at once: the second inserts nothing.
        async with unavailable_as_503("creating the account"):
            return await self.pool.fetchval(
                "INSERT INTO accounts (name, name_key, password_hash, created_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (name_key) DO NOTHING RETURNING user_id",
                name,
                name_key,
                password_hash,
                now,
            )

    async def find_account(self, name_key: str) -> AccountRow | None:
        async with unavailable_as_503("reading the account"):
            row = await self.pool.fetchrow(
                "SELECT user_id, name, password_hash FROM accounts WHERE name_key = $1", name_key
            )
        return None if row is None else AccountRow(row[0], row[1], row[2])

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        async with unavailable_as_503("updating the account"):
            await self.pool.execute(
                "UPDATE accounts SET password_hash = $2 WHERE user_id = $1", user_id, password_hash
            )

    async def session_generation(self, user_id: int) -> int:
        async with unavailable_as_503("checking the session"):
            generation = await self.pool.fetchval(
                "SELECT generation FROM session_generations WHERE user_id = $1", user_id
            )
        return int(generation or 0)

    async def session_state(self, user_id: int) -> tuple[int, str | None]:
        async with unavailable_as_503("checking the session"):
            row = await self.pool.fetchrow(
                "SELECT (SELECT generation FROM session_generations WHERE user_id = $1), "
                "(SELECT name FROM accounts WHERE user_id = $1)",
                user_id,
            )
        return int(row[0] or 0), row[1]

    async def end_sessions(self, user_id: int, generation: int) -> int:
        async with unavailable_as_503("ending the sessions"), self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO session_generations AS s VALUES ($1, $2 + 1) "
                "ON CONFLICT (user_id) DO UPDATE SET generation = s.generation + 1 "
                "WHERE s.generation = $2",
                user_id,
                generation,
            )
            current = await conn.fetchval(
                "SELECT generation FROM session_generations WHERE user_id = $1", user_id
            )
        return int(current)


class _PostgresWrite:
    def __init__(self, conn: asyncpg.Connection, user_id: int) -> None:
        self.conn = conn
        self.user_id = user_id

    async def load_key(self, key: str, now: float) -> StoredKey | None:
        row = await self.conn.fetchrow(
            "SELECT method, fingerprint, response FROM idempotency_keys "
            "WHERE user_id = $1 AND key = $2 AND created_at >= $3",
            self.user_id,
            key,
            now - IDEMPOTENCY_TTL,
        )
        return None if row is None else StoredKey(row[0], row[1], orjson.loads(row[2]))

    async def save(self, key: str, stored: StoredKey, row: Row, now: float) -> None:
        conn = self.conn
        await conn.execute(
            "INSERT INTO subscriptions VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE "
            "SET plan_id = excluded.plan_id, status = excluded.status, "
            "updated_at = excluded.updated_at",
            self.user_id,
            row.plan_id,
            row.status,
            datetime.fromisoformat(row.updated_at),
        )
        # An expired key (past the TTL, not yet purged) may be used afresh: replace it. A live
        # one was found by load_key under the same user lock, so this never overwrites one.
        await conn.execute(
            "INSERT INTO idempotency_keys VALUES ($1, $2, $3, $4, $5::jsonb, $6) "
            "ON CONFLICT (user_id, key) DO UPDATE SET method = excluded.method, "
            "fingerprint = excluded.fingerprint, response = excluded.response, "
            "created_at = excluded.created_at",
            self.user_id,
            key,
            stored.method,
            stored.fingerprint,
            orjson.dumps(stored.response).decode(),
            now,
        )
        await conn.execute(
            "INSERT INTO subscription_events "
            "(user_id, idempotency_key, method, plan_id, status, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            self.user_id,
            key,
            stored.method,
            row.plan_id,
            row.status,
            now,
        )
        # Forget keys past their TTL (a retry a day later is a new request), a batch at a time,
        # skipping rows that another replica's write is deleting right now.
        await conn.execute(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY("
            " SELECT ctid FROM idempotency_keys WHERE created_at < $1"
            f" LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED))",
            now - IDEMPOTENCY_TTL,
        )


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")
