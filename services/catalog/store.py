"""The catalog's stores, derived from the MovieLens CSVs: the rows both stores hold, and the
SQLite one (the PostgreSQL one is ``services.catalog.pg_store``).

The CSVs are the source of truth; a store is a derived, read-only artefact. The SQLite file is
rebuilt only when the CSVs change (a fingerprint of their names, sizes and mtimes is stored in the
database), and always built into a temporary file that replaces the old one atomically, so several
processes that start at once never see (or leave) a half-written database. It searches titles
with FTS5 (``unicode61``, diacritics removed), ranked by bm25.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import sqlite3
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import orjson

# Bump when the schema or the derivation changes: a new version forces a rebuild.
SCHEMA_VERSION = 2
CSV_FILES = ("movies.csv", "links.csv", "tags.csv", "ratings.csv")
MAX_TAGS = 5
NO_GENRES = "(no genres listed)"
# The MovieLens genre vocabulary (its README): what the API accepts and its spec lists.
KNOWN_GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$")
# MovieLens files articles at the end ("Matrix, The"); we show titles the way people say them.
_ARTICLE = re.compile(r"^(?P<base>.+), (?P<article>The|A|An|Les|La|Le|Il|El|Der|Die|Das|Los|Las)$")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE movies (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    original_title TEXT NOT NULL,
    year INTEGER,
    genres TEXT NOT NULL,          -- JSON list
    imdb_id TEXT,
    tmdb_id INTEGER,
    rating_count INTEGER NOT NULL,
    rating_mean REAL,
    log_count REAL NOT NULL,       -- ln(1 + rating_count): the popularity boost in search ranking
    tags TEXT NOT NULL             -- JSON list, most applied first
);
CREATE TABLE movie_genres (
    genre TEXT NOT NULL,
    movie_id INTEGER NOT NULL,
    PRIMARY KEY (genre, movie_id)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE movies_fts USING fts5(
    title, content='movies', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
"""


@dataclass(frozen=True)
class ParsedTitle:
    title: str
    year: int | None


def parse_title(raw: str) -> ParsedTitle:
    """Split "Matrix, The (1999)" into ("The Matrix", 1999); titles without a year keep None."""
    raw = raw.strip()
    match = _YEAR.match(raw)
    title, year = (match["title"], int(match["year"])) if match else (raw, None)
    main, sep, alternative = title.partition(" (")
    article = _ARTICLE.match(main)
    if article:
        main = f"{article['article']} {article['base']}"
    return ParsedTitle(f"{main}{sep}{alternative}".strip() or raw, year)


def parse_genres(raw: str) -> list[str]:
    raw = raw.strip()
    if not raw or raw == NO_GENRES:
        return []
    return [g.strip() for g in raw.split("|") if g.strip()]


def imdb_id(raw: str) -> str | None:
    raw = raw.strip()
    return f"tt{int(raw):07d}" if raw.isdigit() else None


def fingerprint(data_dir: Path) -> str:
    """Cheap identity of the source data: names, sizes and mtimes of the CSVs, plus the schema."""
    digest = hashlib.sha256(f"schema={SCHEMA_VERSION}".encode())
    for name in CSV_FILES:
        stat = (data_dir / name).stat()
        digest.update(f"|{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def stored_fingerprint(db_path: Path) -> str | None:
    """The fingerprint a built database records, or None when missing or unreadable."""
    if not db_path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _rating_stats(path: Path) -> dict[int, tuple[int, float]]:
    counts: Counter[int] = Counter()
    sums: defaultdict[int, float] = defaultdict(float)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for row in reader:
            movie = int(row[1])
            counts[movie] += 1
            sums[movie] += float(row[2])
    return {m: (n, sums[m] / n) for m, n in counts.items()}


def _top_tags(path: Path) -> dict[int, list[str]]:
    """Per movie, its most applied tags, case-insensitively merged, most applied first."""
    counts: defaultdict[int, Counter[str]] = defaultdict(Counter)
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            tag = " ".join(row["tag"].split()).lower()
            if tag:
                counts[int(row["movieId"])][tag] += 1
    return {
        movie: [t for t, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS]]
        for movie, c in counts.items()
    }


def _links(path: Path) -> dict[int, tuple[str | None, int | None]]:
    links = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            tmdb = row["tmdbId"].strip()
            links[int(row["movieId"])] = (imdb_id(row["imdbId"]), int(tmdb) if tmdb else None)
    return links


@dataclass(frozen=True)
class CatalogRows:
    """What a store holds: one tuple per movie (the columns of ``MOVIE_COLUMNS``, genres and
    tags as JSON text) and (genre, movie_id) pairs."""

    movies: list[tuple]
    genres: list[tuple[str, int]]


# The columns of a movie row, in order (the SQLite table and the PostgreSQL table alike).
MOVIE_COLUMNS = (
    "id",
    "title",
    "original_title",
    "year",
    "genres",
    "imdb_id",
    "tmdb_id",
    "rating_count",
    "rating_mean",
    "log_count",
    "tags",
)


def derive_rows(data_dir: Path) -> CatalogRows:
    """Parse the CSVs into the rows of a store."""
    stats = _rating_stats(data_dir / "ratings.csv")
    tags = _top_tags(data_dir / "tags.csv")
    links = _links(data_dir / "links.csv")
    movies: list[tuple] = []
    genre_rows: list[tuple[str, int]] = []
    with (data_dir / "movies.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            movie_id = int(row["movieId"])
            parsed = parse_title(row["title"])
            genres = parse_genres(row["genres"])
            count, mean = stats.get(movie_id, (0, None))
            imdb, tmdb = links.get(movie_id, (None, None))
            movies.append(
                (
                    movie_id,
                    parsed.title,
                    row["title"].strip(),
                    parsed.year,
                    orjson.dumps(genres).decode(),
                    imdb,
                    tmdb,
                    count,
                    None if mean is None else round(mean, 2),
                    math.log1p(count),
                    orjson.dumps(tags.get(movie_id, [])).decode(),
                )
            )
            genre_rows.extend((g, movie_id) for g in dict.fromkeys(genres))
    return CatalogRows(movies, genre_rows)


def _write(data_dir: Path, path: Path, print_: str) -> None:
    rows = derive_rows(data_dir)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.executescript(SCHEMA)
        conn.executemany("INSERT INTO movies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows.movies)
        conn.executemany("INSERT INTO movie_genres VALUES (?, ?)", rows.genres)
        conn.execute("INSERT INTO movies_fts(rowid, title) SELECT id, title FROM movies")
        conn.execute("INSERT INTO movies_fts(movies_fts) VALUES ('optimize')")
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("fingerprint", print_), ("schema_version", str(SCHEMA_VERSION))],
        )
        conn.commit()
    finally:
        conn.close()


def build_catalog_db(data_dir: Path, db_path: Path) -> None:
    """Build the catalog database at ``db_path`` unless an up-to-date one is already there."""
    data_dir, db_path = Path(data_dir), Path(db_path)
    print_ = fingerprint(data_dir)
    if stored_fingerprint(db_path) == print_:
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        _write(data_dir, tmp, print_)
        os.replace(tmp, db_path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- reading ----------------------------------------------------------------------------------
# The columns the catalog serves, as ``load_movies`` returns them.
SERVED_COLUMNS = "id, title, year, genres, imdb_id, tmdb_id, rating_count, rating_mean, tags"


def match_expression(words: list[str]) -> str | None:
    """An FTS5 query where every word must prefix-match a title word ("matri" → Matrix).

    Each word is asked for both whole and as a prefix, so bm25 scores a whole-word match higher
    ("toy" → "Toy Story" before "Toys"). Words are quoted: nothing typed is read as FTS5 syntax.
    """
    return " AND ".join(f'("{w}" OR "{w}"*)' for w in words) or None


class SqliteCatalogStore:
    """A read-only connection to a database ``build_catalog_db`` made."""

    def __init__(self, db_path: Path) -> None:
        uri = f"{Path(db_path).resolve().as_uri()}?mode=ro"
        self.conn: sqlite3.Connection | None = sqlite3.connect(
            uri, uri=True, check_same_thread=False
        )

    @property
    def is_open(self) -> bool:
        return self.conn is not None

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def load_movies(self) -> list[tuple]:
        assert self.conn is not None
        return self.conn.execute(f"SELECT {SERVED_COLUMNS} FROM movies").fetchall()

    async def match(
        self, words: list[str], genre: str | None, limit: int, offset: int, weight: float
    ) -> tuple[list[int], int]:
        """Ids of the titles matching every word, best first (bm25 boosted by popularity:
        ``bm25 * (1 + weight * ln(1 + ratings))``), and how many match in all."""
        expression = match_expression(words)
        if expression is None or self.conn is None:
            return [], 0
        where = "movies_fts MATCH ?"
        args: list[object] = [expression]
        if genre is not None:
            where += " AND m.id IN (SELECT movie_id FROM movie_genres WHERE genre = ?)"
            args.append(genre)
        source = f"FROM movies_fts JOIN movies m ON m.id = movies_fts.rowid WHERE {where}"
        total = self.conn.execute(f"SELECT count(*) {source}", args).fetchone()[0]
        rows = self.conn.execute(
            f"SELECT m.id {source} ORDER BY bm25(movies_fts) * (1 + ? * m.log_count), "
            "m.rating_count DESC, m.rating_mean DESC, m.id LIMIT ? OFFSET ?",
            [*args, weight, limit, offset],
        ).fetchall()
        return [r[0] for r in rows], total
