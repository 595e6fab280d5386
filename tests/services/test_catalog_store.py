"""Building the catalog stores (SQLite and PostgreSQL): title parsing, idempotence, rebuilds,
concurrent builders, speed."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from services.catalog.catalog import Catalog, open_catalog
from services.catalog.store import SqliteCatalogStore, build_catalog_db, parse_title
from services.platform.settings import Settings
from tests.conftest import DATA_DIR
from tests.pg import PostgresServer


@pytest.mark.parametrize(
    ("raw", "title", "year"),
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("American President, The (1995)", "The American President", 1995),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            "The City of Lost Children (Cité des enfants perdus, La)",
            1995,
        ),
        ("Babylon 5", "Babylon 5", None),
        ("Runaway Brain (1995) ", "Runaway Brain", 1995),
        ("Death Note: Desu nôto (2006–2007)", "Death Note: Desu nôto", 2006),
    ],
)
def test_parse_title_splits_year_and_moves_article(raw: str, title: str, year: int | None) -> None:
    parsed = parse_title(raw)
    assert (parsed.title, parsed.year) == (title, year)


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    """A private copy of the CSVs, so a test may change them."""
    target = tmp_path / "data"
    shutil.copytree(DATA_DIR, target, ignore=shutil.ignore_patterns("README*"))
    return target


@pytest.mark.timing
def test_build_takes_well_under_a_minute(data_copy: Path, tmp_path: Path) -> None:
    """A new replica builds its store at start-up; ~1 s here, bounded with 10x headroom+."""
    started = time.perf_counter()
    build_catalog_db(data_copy, tmp_path / "catalog.sqlite3")
    assert time.perf_counter() - started < 30.0


def test_build_again_with_same_data_leaves_the_file_alone(data_copy: Path, tmp_path: Path) -> None:
    db = tmp_path / "catalog.sqlite3"
    build_catalog_db(data_copy, db)
    before = db.stat()
    build_catalog_db(data_copy, db)
    after = db.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_changed_data_rebuilds_the_store(data_copy: Path, tmp_path: Path) -> None:
    db = tmp_path / "catalog.sqlite3"
    build_catalog_db(data_copy, db)
    with (data_copy / "movies.csv").open("a", newline="", encoding="utf-8") as fh:
        fh.write("999999,Brand New Film (2030),Comedy\r\n")
    build_catalog_db(data_copy, db)
    store = SqliteCatalogStore(db)
    assert Catalog(store.load_movies(), store).movie(999999).title == "Brand New Film"


def test_concurrent_builders_leave_one_complete_store(data_copy: Path, tmp_path: Path) -> None:
    db = tmp_path / "catalog.sqlite3"
    with ProcessPoolExecutor(max_workers=3) as pool:
        list(pool.map(build_catalog_db, [data_copy] * 3, [db] * 3))
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM movies").fetchone()[0] == 9742
    finally:
        conn.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


async def test_catalog_connection_is_read_only(catalog_db: Path) -> None:
    store = SqliteCatalogStore(catalog_db)
    try:
        with pytest.raises(sqlite3.OperationalError):
            store.conn.execute("DELETE FROM movies")
    finally:
        await store.close()


# ---- PostgreSQL -------------------------------------------------------------------------------
@pytest.fixture
def pg_settings(postgres: PostgresServer, tmp_path: Path, data_copy: Path) -> Iterator[Settings]:
    """Settings on a database of its own (the catalog tables start absent)."""
    url = postgres.create_database()
    yield Settings(
        var_dir=tmp_path,
        data_dir=data_copy,
        database_url=url,
        redis_url="",
        secret_key="s",
        service_token="t",
        admin_token="a",
    )
    postgres.drop_database(url)


async def _count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_replicas_starting_together_build_the_postgres_catalog_once(
    pg_settings: Settings,
) -> None:
    catalogs = await asyncio.gather(*(open_catalog(pg_settings) for _ in range(3)))
    try:
        assert [len(c) for c in catalogs] == [9742] * 3
    finally:
        for catalog in catalogs:
            await catalog.close()
    url = pg_settings.database_url
    assert await _count(url, "SELECT count(*) FROM catalog_movies") == 9742
    migrated = "SELECT count(*) FROM schema_migrations WHERE component = 'catalog'"
    assert await _count(url, migrated) == 1


async def test_changed_data_rebuilds_the_postgres_catalog(
    pg_settings: Settings, data_copy: Path
) -> None:
    await (await open_catalog(pg_settings)).close()
    with (data_copy / "movies.csv").open("a", newline="", encoding="utf-8") as fh:
        fh.write("999999,Brand New Film (2030),Comedy\r\n")
    catalog = await open_catalog(pg_settings)
    try:
        assert catalog.movie(999999).title == "Brand New Film"
        found = await catalog.search("brand new film")
        assert [m.id for m in found.items] == [999999]
    finally:
        await catalog.close()
