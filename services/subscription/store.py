"""The subscription service's stores: what ``Subscriptions`` and ``Accounts`` need of one, and
the SQLite one.

Two stores keep the same tables: SQLite (``SqliteStore``, the embedded default: one file in
``var/``) and PostgreSQL (``services.subscription.pg_store``, chosen by ``MARQUEE_DATABASE_URL``,
shared by every replica). ``Subscriptions`` holds the rules once and speaks to either through a
write transaction (``WriteTransaction``): look up the key, change the row, record the key and
the event, all or nothing.

SQLite: several processes (workers, the monolith, a CLI) may share one file, so it runs in WAL
mode (readers never block the writer) with a busy timeout, and every write is one
``BEGIN IMMEDIATE`` transaction: it takes the write lock first, so a check-then-write never races
another process. Reads are fast and run inline on the event loop through their own connection;
writes may wait for another process's lock, so they run on one writer thread.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import orjson

from services.platform.settings import Settings
from services.subscription.schemas import Plan

BUSY_TIMEOUT_MS = 5000
IDEMPOTENCY_TTL = 24 * 3600
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
T = TypeVar("T")


PLANS = (
    Plan("basic", "Basic", 799, "EUR", ("1 screen at a time", "HD (720p)", "Watch on any device")),
    Plan(
        "standard",
        "Standard",
        1299,
        "EUR",
        ("2 screens at a time", "Full HD (1080p)", "Downloads on 2 devices"),
    ),
    Plan(
        "premium",
        "Premium",
        1799,
        "EUR",
        ("4 screens at a time", "Ultra HD (4K) and HDR", "Downloads on 6 devices", "Spatial audio"),
    ),
)


@dataclass(frozen=True)
class Row:
    """A user's subscription as stored."""

    plan_id: str | None
    status: str  # active | none
    updated_at: str  # ISO 8601, UTC, milliseconds


@dataclass(frozen=True)
class StoredKey:
    method: str
    fingerprint: str
    response: dict  # the answer as sent (JSON), replayed for a retry


@dataclass(frozen=True)
class AccountRow:
    """An account as stored (``services.subscription.accounts`` holds the rules)."""

    user_id: int
    name: str
    password_hash: str  # argon2id, PHC form


FIRST_ACCOUNT_ID = 1_000_000  # accounts' user ids start here, above every MovieLens user id


class WriteTransaction(Protocol):
    """One write of one user, all or nothing; no other write of that user runs meanwhile."""

    async def load_key(self, key: str, now: float) -> StoredKey | None: ...

    async def save(self, key: str, stored: StoredKey, row: Row, now: float) -> None:
        """The new row, the key with its response, and the event, in the transaction."""
        ...


class Store(Protocol):
    @property
    def is_open(self) -> bool: ...

    async def load_plans(self) -> list[Plan]: ...

    async def load(self, user_id: int) -> Row | None: ...

    def write(self, user_id: int) -> AbstractAsyncContextManager[WriteTransaction]: ...

    async def close(self) -> None: ...

    # ---- accounts and session generations ---------------------------------------------------
    async def create_account(
        self, name: str, name_key: str, password_hash: str, now: float
    ) -> int | None:
        """The new account's user id (from ``FIRST_ACCOUNT_ID`` up), or None: the name is taken."""
        ...

    async def find_account(self, name_key: str) -> AccountRow | None: ...

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        """Replace a hash made with weaker parameters (on a successful log-in)."""
        ...

    async def session_generation(self, user_id: int) -> int:
        """The user's current session generation (0 for a user who never logged out)."""
        ...

    async def session_state(self, user_id: int) -> tuple[int, str | None]:
        """The session generation and the account's name (None: no account, a demo user)."""
        ...

    async def end_sessions(self, user_id: int, generation: int) -> int:
        """Move the user to the next generation if ``generation`` is still the current one (a
        dead token cannot end the sessions made after it); returns the current generation."""
        ...


async def open_store(settings: Settings) -> Store:
    """PostgreSQL when ``database_url`` is set, else the SQLite file ``subscription_db``."""
    if settings.database_url:
        from services.subscription.pg_store import PostgresStore

        return await PostgresStore.open(settings.database_url)
    return await asyncio.to_thread(SqliteStore, settings.subscription_db)


# ---- SQLite -----------------------------------------------------------------------------------
def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (0600): it holds who pays for what.
    SQLite gives its -wal and -shm files the same mode. A file made earlier is tightened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, retrying while another process opening the same new file holds the lock:
    SQLite does not apply busy_timeout to this switch, and N workers starting at once race."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are begun explicitly, so their kind (IMMEDIATE) is ours.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate_sqlite(conn: sqlite3.Connection) -> list[int]:
    """Apply the SQLite migrations the file lacks (its ``user_version`` is the last applied),
    each with the version bump in one write transaction; returns the versions applied."""
    from services.platform.postgres import migrations

    applied = []
    for migration in migrations(MIGRATIONS / "sqlite"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < migration.version:
                for statement in migration.sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version:d}")
                applied.append(migration.version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied


def plan_rows(plans: tuple[Plan, ...]) -> list[tuple]:
    return [
        (p.id, i, p.name, p.price_cents, p.currency, orjson.dumps(p.features).decode())
        for i, p in enumerate(plans)
    ]


class SqliteStore:
    """A reader connection used on the event loop and a writer connection on one thread."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        _create_private(path)
        self._writer = _connect(path)
        migrate_sqlite(self._writer)
        self._writer.execute("BEGIN IMMEDIATE")
        self._writer.executemany(
            "INSERT INTO plans VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "position = excluded.position, name = excluded.name, "
            "price_cents = excluded.price_cents, currency = excluded.currency, "
            "features = excluded.features",
            plan_rows(PLANS),
        )
        self._writer.execute("COMMIT")
        self._reader: sqlite3.Connection | None = _connect(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._lock = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        return self._reader is not None

    async def close(self) -> None:
        if self._reader is None:
            return
        async with self._lock:
            self._reader.close()
            self._reader = None
            await self._run(self._writer.close)
            self._thread.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("the subscription store is closed")
        return self._reader

    async def load_plans(self) -> list[Plan]:
        rows = self._read().execute(
            "SELECT id, name, price_cents, currency, features FROM plans ORDER BY position"
        )
        return [Plan(r[0], r[1], r[2], r[3], tuple(orjson.loads(r[4]))) for r in rows]

    async def load(self, user_id: int) -> Row | None:
        row = (
            self._read()
            .execute(
                "SELECT plan_id, status, updated_at FROM subscriptions WHERE user_id = ?",
                (user_id,),
            )
            .fetchone()
        )
        return None if row is None else Row(row[0], row[1], row[2])

    @asynccontextmanager
    async def write(self, user_id: int) -> AsyncIterator[WriteTransaction]:
        async with self._lock:
            self._read()
            await self._run(lambda: self._writer.execute("BEGIN IMMEDIATE"))
            try:
                yield _SqliteWrite(self, user_id)
            except BaseException:
                await self._run(self._rollback)
                raise
            await self._run(lambda: self._writer.execute("COMMIT"))

    def _rollback(self) -> None:
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(writer)`` in one ``BEGIN IMMEDIATE`` transaction on the writer thread."""

        def run() -> T:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._writer)
            except BaseException:
                self._rollback()
                raise
            self._writer.execute("COMMIT")
            return result

        async with self._lock:
            self._read()
            return await self._run(run)

    # ---- accounts and session generations ---------------------------------------------------
    async def create_account(
        self, name: str, name_key: str, password_hash: str, now: float
    ) -> int | None:
        def create(conn: sqlite3.Connection) -> int | None:
            # The write lock is held (BEGIN IMMEDIATE): no other process picks the same id.
            if conn.execute("SELECT 1 FROM accounts WHERE name_key = ?", (name_key,)).fetchone():
                return None
            (user_id,) = conn.execute(
                "SELECT COALESCE(MAX(user_id) + 1, ?) FROM accounts", (FIRST_ACCOUNT_ID,)
            ).fetchone()
            conn.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?, ?)",
                (user_id, name, name_key, password_hash, now),
            )
            return int(user_id)

        return await self._transaction(create)

    async def find_account(self, name_key: str) -> AccountRow | None:
        row = (
            self._read()
            .execute(
                "SELECT user_id, name, password_hash FROM accounts WHERE name_key = ?", (name_key,)
            )
            .fetchone()
        )
        return None if row is None else AccountRow(row[0], row[1], row[2])

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self._transaction(
            lambda conn: conn.execute(
                "UPDATE accounts SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)
            )
        )

    async def session_generation(self, user_id: int) -> int:
        row = (
            self._read()
            .execute("SELECT generation FROM session_generations WHERE user_id = ?", (user_id,))
            .fetchone()
        )
        return 0 if row is None else int(row[0])

    async def session_state(self, user_id: int) -> tuple[int, str | None]:
        generation, name = (
            self._read()
            .execute(
                "SELECT (SELECT generation FROM session_generations WHERE user_id = ?), "
                "(SELECT name FROM accounts WHERE user_id = ?)",
                (user_id, user_id),
            )
            .fetchone()
        )
        return int(generation or 0), name

    async def end_sessions(self, user_id: int, generation: int) -> int:
        def end(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO session_generations VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE "
                "SET generation = generation + 1 WHERE generation = ?",
                (user_id, generation + 1, generation),
            )
            row = conn.execute(
                "SELECT generation FROM session_generations WHERE user_id = ?", (user_id,)
            ).fetchone()
            return int(row[0])

        return await self._transaction(end)


class _SqliteWrite:
    def __init__(self, store: SqliteStore, user_id: int) -> None:
        self.store = store
        self.user_id = user_id

    async def load_key(self, key: str, now: float) -> StoredKey | None:
        def load() -> tuple | None:
            return self.store._writer.execute(
                "SELECT method, fingerprint, response FROM idempotency_keys "
                "WHERE user_id = ? AND key = ? AND created_at >= ?",
                (self.user_id, key, now - IDEMPOTENCY_TTL),
            ).fetchone()

        row = await self.store._run(load)
        return None if row is None else StoredKey(row[0], row[1], orjson.loads(row[2]))

    async def save(self, key: str, stored: StoredKey, row: Row, now: float) -> None:
        def save() -> None:
            conn = self.store._writer
            conn.execute(
                "INSERT INTO subscriptions VALUES (?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET "
                "plan_id = excluded.plan_id, status = excluded.status, "
                "updated_at = excluded.updated_at",
                (self.user_id, row.plan_id, row.status, row.updated_at),
            )
            # REPLACE: an expired key (older than the TTL, not yet purged) may be used afresh.
            conn.execute(
                "INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self.user_id,
                    key,
                    stored.method,
                    stored.fingerprint,
                    orjson.dumps(stored.response).decode(),
                    now,
                ),
            )
            conn.execute(
                "INSERT INTO subscription_events "
                "(user_id, idempotency_key, method, plan_id, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.user_id, key, stored.method, row.plan_id, row.status, now),
            )
            # Forget keys past their TTL: a retry a day later is a new request.
            conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (now - IDEMPOTENCY_TTL,)
            )

        await self.store._run(save)
