"""PostgreSQL for the tests: the machine's server (127.0.0.1:5432) or an instance of our own.

Tests never change the machine's server beyond creating and dropping their own databases. A test
that stops or restarts PostgreSQL starts its own instance (``PostgresInstance``: initdb into a
temporary directory, ``pg_ctl`` on a free port, optionally inside a network namespace).
"""

from __future__ import annotations

import asyncio
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg

from tests.support import free_port

SHARED_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
T = TypeVar("T")


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, on a loop of its own in a thread
    (so it never meets the test's event loop)."""

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def answers(url: str, timeout: float = 2.0) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return run_async(probe)


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def pg_bindir() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` system user."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


@dataclass
class PostgresInstance:
    """A PostgreSQL of our own: its data directory, port and listen address; ``netns`` runs it
    inside a network namespace. Started, stopped and restarted with pg_ctl."""

    workdir: Path
    port: int
    host: str = "127.0.0.1"
    netns: str | None = None
    trusted: tuple[str, ...] = ()  # networks (CIDR) besides loopback that may connect
    bindir: Path = field(default_factory=lambda: pg_bindir() or Path("/usr/bin"))

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _run(self, args: list[str], timeout: float = 60.0) -> None:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        result = subprocess.run(
            [*prefix, *_as_postgres_user(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            log = (self.workdir / "postgres.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{args[0]} failed: {result.stderr}\n{log}")

    @classmethod
    def create(
        cls,
        port: int,
        host: str = "127.0.0.1",
        netns: str | None = None,
        trusted: tuple[str, ...] = (),
    ) -> PostgresInstance:
        """A new instance in a directory of its own under /tmp (run as ``postgres`` when we are
        root, it must be able to reach it: pytest's own temporary directories are root-only)."""
        workdir = Path(tempfile.mkdtemp(prefix="marquee-pg-"))
        return cls(workdir, port, host, netns, trusted).init()

    def remove(self) -> None:
        """Stop it and delete its files."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def init(self) -> PostgresInstance:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        with (self.datadir / "pg_hba.conf").open("a") as hba:
            for network in self.trusted:
                hba.write(f"host all all {network} trust\n")
        return self

    def start(self) -> PostgresInstance:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses={self.host}"
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-o",
                options,
                "-l",
                str(self.workdir / "postgres.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        return self

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected, committed work is kept)."""
        if (self.datadir / "postmaster.pid").exists():
            pg_ctl = str(self.bindir / "pg_ctl")
            self._run([pg_ctl, "-D", str(self.datadir), "-m", "fast", "-w", "stop"])

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class PostgresServer:
    """Where the tests' databases are made: the machine's server or ``instance``."""

    admin_url: str
    instance: PostgresInstance | None = None
    created: list[str] = field(default_factory=list)

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)

    def create_database(self, prefix: str = "marquee_test") -> str:
        """A fresh, empty database; returns its URL."""
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"

        async def create() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        run_async(create)
        self.created.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rpartition("/")[2]

        async def drop() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        run_async(drop)
        if name in self.created:
            self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            self.drop_database(self.url(name))
        if self.instance is not None:
            self.instance.remove()


def shared_or_own() -> PostgresServer:
    """The machine's PostgreSQL when it answers, else a new instance of our own."""
    if answers(SHARED_URL):
        return PostgresServer(SHARED_URL)
    instance = PostgresInstance.create(free_port()).start()
    return PostgresServer(instance.admin_url, instance)


async def truncate(url: str, tables: tuple[str, ...]) -> None:
    """Empty ``tables`` (those that exist yet) so that a test starts from no rows."""
    conn = await asyncpg.connect(url)
    try:
        existing = [
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename = ANY($1::text[])",
                list(tables),
            )
        ]
        if existing:
            await conn.execute(f"TRUNCATE {', '.join(existing)} RESTART IDENTITY")
    finally:
        await conn.close()
