"""PostgreSQL for the stores that replicas share: one asyncpg pool per process, versioned
migrations applied under an advisory lock, and the errors that mean "the database is not there".

Why these pieces live together: every service that keeps state in PostgreSQL needs the same three
answers. How to connect (a pool opened in the app's ``cleanup_ctx``, with short connect and
command timeouts so a dead database costs seconds, not minutes); how to change the schema when N
replicas start at once (``migrate``: a session advisory lock, then each missing version in its own
transaction); and what to tell a client while the database is down (``DatabaseUnavailable``: 503
with ``Retry-After``, never a 500 or a hang).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.platform.errors import NotReady

log = logging.getLogger("marquee.postgres")

RETRY_AFTER = 2  # seconds a client should wait after a 503 for an unreachable database
CONNECT_TIMEOUT = 2.0  # one connection attempt; a partitioned host must not hang a request
COMMAND_TIMEOUT = 5.0  # one statement
START_TIMEOUT = 30.0  # how long start-up waits for the database to answer
POOL_MIN, POOL_MAX = 1, 10
_MIGRATION = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

# Raised when the server is unreachable, restarting, shutting down or dropped the connection:
# the request may succeed if retried later, so it is a 503, not a 500.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # includes "connection is closed" / ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, statement timeout
    asyncpg.exceptions.TooManyConnectionsError,
)


class DatabaseUnavailable(NotReady):
    """The database could not be reached: retry after ``retry_after`` seconds (the platform's
    error answer sends it as Retry-After)."""

    code = "database_unavailable"
    retry_after = RETRY_AFTER


@asynccontextmanager
async def unavailable_as_503(what: str) -> AsyncIterator[None]:
    """Turn "no database right now" into ``DatabaseUnavailable``; other errors pass through."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise DatabaseUnavailable(
            f"{what} failed: the database is not reachable right now; try again in "
            f"{RETRY_AFTER} s (a write sent again with its Idempotency-Key applies at most once)"
        ) from exc


async def open_pool(url: str, *, max_size: int = POOL_MAX) -> asyncpg.Pool:
    """A pool, retried while the database is starting (replicas and database start together)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return await asyncpg.create_pool(
                url,
                min_size=POOL_MIN,
                max_size=max_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                max_inactive_connection_lifetime=60.0,
            )
        except UNAVAILABLE as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database not reachable yet; retrying", extra={"error": repr(exc)})
            await asyncio.sleep(0.5)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(directory: Path) -> list[Migration]:
    """``NNNN_name.sql`` files of ``directory`` in version order; versions never repeat."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if match is None:
            raise ValueError(f"{path}: migrations are named NNNN_name.sql")
        found.append(Migration(int(match["version"]), match["name"], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{directory}: two migrations share a version")
    return found


async def migrate(conn: asyncpg.Connection, component: str, directory: Path) -> list[int]:
    """Apply the migrations of ``component`` that the database lacks; returns those applied.

    A session-level advisory lock (one per component) makes replicas that start together wait
    for the first one; they then find every version applied and apply nothing. Each version is
    applied and recorded in one transaction, so a crash leaves it either wholly there or not.
    """
    lock = _lock_key(component)
    await conn.execute("SELECT pg_advisory_lock($1)", lock)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component text NOT NULL, version integer NOT NULL, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        rows = await conn.fetch(
            "SELECT version FROM schema_migrations WHERE component = $1", component
        )
        done = {r["version"] for r in rows}
        applied = []
        for migration in migrations(directory):
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                    component,
                    migration.version,
                    migration.name,
                )
            applied.append(migration.version)
            log.info("migrated", extra={"component": component, "version": migration.version})
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock)


def _lock_key(component: str) -> int:
    """A stable 63-bit advisory lock id per component (hash() differs between processes)."""
    digest = hashlib.sha256(f"marquee-migrations:{component}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
