"""The subscription service's SQLite store: schema, seeded plans, and write transactions.

Several processes (workers, the monolith, a CLI) may share one database file, so the store runs in
WAL mode (readers never block the writer) with a busy timeout, and every write is one
``BEGIN IMMEDIATE`` transaction: it takes the write lock first, so a check-then-write (the
idempotency key lookup, then the change) never races another process.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

BUSY_TIMEOUT_MS = 5000
IDEMPOTENCY_TTL = 24 * 3600


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    price_cents: int
    currency: str
    features: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "price_cents": self.price_cents,
            "currency": self.currency,
            "features": list(self.features),
        }


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

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    features TEXT NOT NULL           -- JSON list
);
CREATE TABLE IF NOT EXISTS subscriptions (
    user_id INTEGER PRIMARY KEY,
    plan_id TEXT REFERENCES plans(id),
    status TEXT NOT NULL,            -- active | none
    updated_at TEXT NOT NULL         -- ISO 8601, UTC
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    method TEXT NOT NULL,
    fingerprint TEXT NOT NULL,       -- of the request: a reused key must carry the same request
    response TEXT NOT NULL,          -- JSON answered the first time, answered again on retries
    created_at REAL NOT NULL         -- unix seconds
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys(created_at);
"""


@dataclass(frozen=True)
class StoredKey:
    user_id: int
    method: str
    fingerprint: str
    response: dict


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


class SubscriptionStore:
    """One SQLite connection; callers group statements with ``write()`` or ``read()``."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are begun explicitly, so their kind (IMMEDIATE) is ours.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(self._conn)
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        with self.write() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT INTO plans VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "position = excluded.position, name = excluded.name, "
                "price_cents = excluded.price_cents, currency = excluded.currency, "
                "features = excluded.features",
                [
                    (p.id, i, p.name, p.price_cents, p.currency, orjson.dumps(p.features).decode())
                    for i, p in enumerate(PLANS)
                ],
            )

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database's write lock from its first statement."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def load_plans(self) -> list[Plan]:
        with self.read() as conn:
            rows = conn.execute(
                "SELECT id, name, price_cents, currency, features FROM plans ORDER BY position"
            ).fetchall()
        return [Plan(r[0], r[1], r[2], r[3], tuple(orjson.loads(r[4]))) for r in rows]


def load_subscription(conn: sqlite3.Connection, user_id: int) -> tuple[str | None, str, str] | None:
    """(plan_id, status, updated_at) of a user, or None if they never had one."""
    row = conn.execute(
        "SELECT plan_id, status, updated_at FROM subscriptions WHERE user_id = ?", (user_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def save_subscription(
    conn: sqlite3.Connection, user_id: int, plan_id: str | None, status: str, updated_at: str
) -> None:
    conn.execute(
        "INSERT INTO subscriptions VALUES (?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET "
        "plan_id = excluded.plan_id, status = excluded.status, updated_at = excluded.updated_at",
        (user_id, plan_id, status, updated_at),
    )


def load_key(conn: sqlite3.Connection, key: str, now: float) -> StoredKey | None:
    row = conn.execute(
        "SELECT user_id, method, fingerprint, response FROM idempotency_keys "
        "WHERE key = ? AND created_at >= ?",
        (key, now - IDEMPOTENCY_TTL),
    ).fetchone()
    return None if row is None else StoredKey(row[0], row[1], row[2], orjson.loads(row[3]))


def save_key(
    conn: sqlite3.Connection,
    key: str,
    stored: StoredKey,
    now: float,
) -> None:
    # REPLACE: an expired key (older than the TTL, not yet purged) may be used afresh.
    conn.execute(
        "INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?, ?, ?)",
        (
            key,
            stored.user_id,
            stored.method,
            stored.fingerprint,
            orjson.dumps(stored.response).decode(),
            now,
        ),
    )


def purge_keys(conn: sqlite3.Connection, now: float) -> int:
    """Forget keys past their TTL: a retry a day later is a new request."""
    return conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < ?", (now - IDEMPOTENCY_TTL,)
    ).rowcount
