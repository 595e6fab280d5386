"""Building the catalog store: title parsing, idempotence, rebuilds, concurrent builders, speed."""

from __future__ import annotations

import shutil
import sqlite3
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from services.catalog.catalog import Catalog
from services.catalog.store import build_catalog_db, parse_title
from tests.conftest import DATA_DIR


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
    catalog = Catalog(db)
    try:
        assert catalog.movie(999999).title == "Brand New Film"
    finally:
        catalog.close()


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


def test_catalog_connection_is_read_only(catalog_db: Path) -> None:
    catalog = Catalog(catalog_db)
    try:
        with pytest.raises(sqlite3.OperationalError):
            catalog._conn.execute("DELETE FROM movies")
    finally:
        catalog.close()
