"""Reading MovieLens ratings (and the movies' metadata) into flat numpy arrays.

Every MovieLens ratings format is accepted, chosen by content rather than by file name:
``ratings.csv`` (``userId,movieId,rating,timestamp`` with a header, CRLF or LF) of the
ml-latest family, ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) of ml-1m/ml-10m, the
tab-separated ``u.data`` of ml-100k, and Parquet files with the same columns.

Why pyarrow: its CSV reader streams the file in blocks and converts each column straight into a
typed array, so a 20M-row file never becomes 80M Python strings (the old parser peaked at 8.6 GiB
on 20M rows). Memory is the four numeric columns plus one block. When pyarrow rejects a file,
a line-by-line scan finds the first bad line so the error names it.

Histories for ``predict`` use the same reader with the rating and timestamp columns optional
(:func:`load_histories`): a missing rating counts as a like, a missing timestamp means row order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as papq

COLUMNS = ("user", "movie", "rating", "timestamp")
_ARRAY_NAMES = {
    "user": "user_ids",
    "movie": "item_ids",
    "rating": "ratings",
    "timestamp": "timestamps",
}
# header spellings (lower case, without "_", "-" and spaces) of each column
_HEADER_NAMES = {
    "userid": "user",
    "user": "user",
    "movieid": "movie",
    "movie": "movie",
    "itemid": "movie",
    "item": "movie",
    "rating": "rating",
    "timestamp": "timestamp",
    "time": "timestamp",
}
_TYPES = {"user": pa.int64(), "movie": pa.int64(), "rating": pa.float32(), "timestamp": pa.int64()}
BLOCK_BYTES = 16 << 20  # one CSV block in flight: bounds the parse's extra memory


@dataclass(frozen=True)
class Interactions:
    """One row per rating event; all arrays have the same length.

    ``ratings`` may hold NaN for "no rating given" (a history for ``predict`` without a rating
    column): such rows count as likes.
    """

    user_ids: np.ndarray  # int64
    item_ids: np.ndarray  # int64 (external movie ids)
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64 (unix seconds, or row numbers when the input had none)

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        if not (len(self.item_ids) == len(self.ratings) == len(self.timestamps) == n):
            raise ValueError("Interactions arrays must all have the same length")

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.user_ids, self.item_ids, self.ratings, self.timestamps))

    @classmethod
    def from_arrays(
        cls,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        ratings: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
    ) -> Interactions:
        """Build with the canonical dtypes; missing ratings default to 1, timestamps to 0."""
        users = np.asarray(user_ids, dtype=np.int64)
        n = len(users)
        return cls(
            user_ids=users,
            item_ids=np.asarray(item_ids, dtype=np.int64),
            ratings=(
                np.ones(n, np.float32) if ratings is None else np.asarray(ratings, dtype=np.float32)
            ),
            timestamps=(
                np.zeros(n, np.int64)
                if timestamps is None
                else np.asarray(timestamps, dtype=np.int64)
            ),
        )

    def subset(self, mask_or_index: np.ndarray) -> Interactions:
        """Rows selected by a boolean mask or an index array."""
        return Interactions(
            user_ids=self.user_ids[mask_or_index],
            item_ids=self.item_ids[mask_or_index],
            ratings=self.ratings[mask_or_index],
            timestamps=self.timestamps[mask_or_index],
        )


def chronological_order(users: np.ndarray, timestamps: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Row order by user, then time, then movie: ``np.lexsort((items, timestamps, users))``.

    lexsort makes one stable pass per key (15 s of CPU on 20M rows); ranking each column and
    packing the three ranks into one int64 key needs a single stable sort (about a third of
    that). When the ranks do not fit 63 bits, lexsort it is.
    """
    keys = []
    bits = 0
    for column in (items, timestamps, users):
        low = int(column.min()) if len(column) else 0
        high = int(column.max()) if len(column) else 0
        if low >= 0 and high < len(column):  # already small ranks (e.g. internal indices)
            rank, width = column.astype(np.int64), max(high.bit_length(), 1)
        else:
            uniq, rank = np.unique(column, return_inverse=True)
            width = max(int(len(uniq) - 1).bit_length(), 1)
        keys.append((rank.astype(np.int64, copy=False), bits))
        bits += width
    if bits > 63:
        return np.lexsort((items, timestamps, users))
    key = np.zeros(len(users), dtype=np.int64)
    for rank, shift in keys:
        key |= rank << shift
    del keys
    return np.argsort(key, kind="stable")


def data_hash(path: str | Path) -> str:
    """sha256 of the file bytes, streamed — recorded in model manifests for provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- ratings ---------------------------------------------------------------------------------
def load_ratings(path: str | Path) -> Interactions:
    """Read a MovieLens ratings file (csv, ``::`` dat, tab-separated u.data or Parquet).

    Raises ``ValueError`` naming the first bad line when the file is malformed, and
    ``FileNotFoundError`` when it does not exist.
    """
    return _load(Path(path), required=COLUMNS, what="ratings")


def load_histories(path: str | Path) -> Interactions:
    """Read ``predict`` input: ``user_id,movie_id[,rating[,timestamp]]`` rows (header optional).

    A MovieLens ratings file is valid input. Without a rating column every row is a like (NaN);
    without a timestamp column the rows are in time order (timestamps = row numbers).
    """
    return _load(Path(path), required=("user", "movie"), what="user_id,movie_id")


@dataclass(frozen=True)
class _Layout:
    sep: str  # "," "\t" or "::"
    columns: tuple[str, ...]  # our column names, in file order ("" = a column we ignore)
    header: bool


def _load(path: Path, required: tuple[str, ...], what: str) -> Interactions:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        return _load_parquet(path, required, what)
    layout = _sniff(path, required)
    chunks: dict[str, list[np.ndarray]] = {c: [] for c in layout.columns if c}
    try:
        for batch in _csv_batches(path, layout):
            for name in chunks:
                chunks[name].append(_column(batch, name))
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        _raise_first_bad_line(path, layout)
        raise ValueError(f"{path}: malformed ratings file ({exc})") from None
    arrays = _concatenate(chunks)
    n = len(arrays["user"])
    if n == 0:
        raise ValueError(f"{path}: no {what} rows")
    return _interactions(path, arrays, n)


def _column(batch: pa.RecordBatch, name: str) -> np.ndarray:
    column = batch.column(name)
    if column.null_count:
        raise pa.ArrowInvalid(f"empty {name} value")
    return column.to_numpy(zero_copy_only=False)


def _concatenate(chunks: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """One column at a time, freeing its chunks: the peak is the data plus one column."""
    out: dict[str, np.ndarray] = {}
    for name in list(chunks):
        parts = chunks.pop(name)
        out[name] = np.concatenate(parts) if parts else np.empty(0, _TYPES[name].to_pandas_dtype())
        del parts
    return out


def _interactions(path: Path, arrays: dict[str, np.ndarray], n: int) -> Interactions:
    ratings = arrays.get("rating")
    if ratings is None:
        ratings = np.full(n, np.nan, dtype=np.float32)
    elif not np.all(np.isfinite(ratings)):
        bad = int(np.flatnonzero(~np.isfinite(ratings))[0])
        raise ValueError(f"{path}: rating {ratings[bad]} of row {bad + 1} is not a finite number")
    stamps = arrays.get("timestamp")
    if stamps is None:
        stamps = np.arange(n, dtype=np.int64)
    return Interactions(
        user_ids=arrays["user"].astype(np.int64, copy=False),
        item_ids=arrays["movie"].astype(np.int64, copy=False),
        ratings=ratings.astype(np.float32, copy=False),
        timestamps=stamps.astype(np.int64, copy=False),
    )


def _normalise(name: str) -> str:
    return _HEADER_NAMES.get(re.sub(r"[\s_\-\"']", "", name.strip().lower()), "")


def _sniff(path: Path, required: tuple[str, ...]) -> _Layout:
    """Separator, header and columns from the first line."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if not head.strip():
        raise ValueError(f"{path}: empty ratings file")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut by the 64 KiB window
            raise ValueError(f"{path}: not a UTF-8 text ratings file ({exc})") from None
        text = head[: exc.start].decode("utf-8-sig")
    first = next((line for line in text.splitlines() if line.strip()), "").strip()
    if "::" in first:
        sep = "::"
    elif "\t" in first:
        sep = "\t"
    elif "," in first or len(required) < len(COLUMNS):
        sep = ","
    else:
        raise ValueError(
            f"{path}: line 1: unrecognised format (expected ',', tab or '::' separated)"
        )
    cells = [c.strip().strip('"') for c in first.split(sep)]
    expected = ",".join(("userId", "movieId", "rating", "timestamp")[: max(len(required), 2)])
    if cells and not cells[0].lstrip("-").isdigit():
        columns = tuple(_normalise(c) for c in cells)
        named = [c for c in columns if c]
        if not set(required) <= set(named) or len(named) != len(set(named)):
            raise ValueError(f"{path}: line 1: expected header '{expected}', got {first[:80]!r}")
        return _Layout(sep, columns, header=True)
    if not len(required) <= len(cells) <= len(COLUMNS):
        raise ValueError(
            f"{path}: line 1: expected {'/'.join(map(str, range(len(required), 5)))} fields "
            f"({expected}...), got {len(cells)}: {first[:80]!r}"
        )
    return _Layout(sep, COLUMNS[: len(cells)], header=False)


def _csv_batches(path: Path, layout: _Layout) -> Iterator[pa.RecordBatch]:
    names = [c or f"_ignored{i}" for i, c in enumerate(layout.columns)]
    wanted = [c for c in layout.columns if c]
    read = pacsv.ReadOptions(
        column_names=names, skip_rows=1 if layout.header else 0, block_size=BLOCK_BYTES
    )
    parse = pacsv.ParseOptions(delimiter="," if layout.sep == "::" else layout.sep)
    convert = pacsv.ConvertOptions(
        include_columns=wanted, column_types={c: _TYPES[c] for c in wanted}
    )
    with open(path, "rb") as raw:
        stream = _ColonsToCommas(raw) if layout.sep == "::" else raw
        reader = pacsv.open_csv(
            stream, read_options=read, parse_options=parse, convert_options=convert
        )
        yield from reader


class _ColonsToCommas(io.RawIOBase):
    """A byte stream with every ``::`` turned into ``,`` (pyarrow takes one-byte delimiters)."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self.raw = raw
        self.carry = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while True:
            chunk = self.raw.read(max(len(buffer) - 1, 1))
            data, self.carry = self.carry + chunk, b""
            if not chunk:  # end of file
                break
            trailing = len(data) - len(data.rstrip(b":"))
            if trailing % 2:  # half of a "::": decide with the next read
                data, self.carry = data[:-1], b":"
            if data:
                break
        out = data.replace(b"::", b",")
        buffer[: len(out)] = out
        return len(out)


def _load_parquet(path: Path, required: tuple[str, ...], what: str) -> Interactions:
    pf = papq.ParquetFile(path)
    columns = {_normalise(name): name for name in pf.schema_arrow.names}
    columns.pop("", None)
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path}: Parquet file has no {'/'.join(missing)} column")
    chunks: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for batch in pf.iter_batches(batch_size=1 << 20, columns=list(columns.values())):
        for ours, theirs in columns.items():
            array = batch.column(theirs).cast(_TYPES[ours])
            if array.null_count:
                raise ValueError(f"{path}: Parquet column {theirs} has empty values")
            chunks[ours].append(array.to_numpy(zero_copy_only=False))
    arrays = _concatenate(chunks)
    n = len(arrays["user"])
    if n == 0:
        raise ValueError(f"{path}: no {what} rows")
    return _interactions(path, arrays, n)


def estimate_rows(path: str | Path) -> int:
    """Rows in a ratings file without reading it: Parquet metadata, or the file size over the
    mean length of the first lines (for ``train --max-memory`` before anything is loaded)."""
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(4) == b"PAR1":
            return int(papq.ParquetFile(path).metadata.num_rows)
        fh.seek(0)
        head = fh.read(1 << 20)
    lines = head.count(b"\n")
    if lines == 0:
        return 1
    return int(path.stat().st_size / (len(head) / lines)) + 1


def _raise_first_bad_line(path: Path, layout: _Layout) -> None:
    """Scan line by line for the first bad line; raise a ValueError naming it."""
    n_fields = len(layout.columns)
    sep = layout.sep
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}: line {lineno}: not UTF-8 text") from None
            if not line.strip() or (lineno == 1 and layout.header):
                continue
            parts = [p.strip() for p in line.strip().split(sep)]
            if len(parts) != n_fields:
                raise ValueError(
                    f"{path}: line {lineno}: expected {n_fields} fields separated by {sep!r}, "
                    f"got {len(parts)}: {line.strip()[:80]!r}"
                )
            values = dict(zip(layout.columns, parts, strict=True))
            try:
                for name in ("user", "movie", "timestamp"):
                    if name in values:
                        int(values[name])
                if "rating" in values and not np.isfinite(float(values["rating"])):
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"{path}: line {lineno}: user, movie and timestamp must be integers and the "
                    f"rating a finite number: {line.strip()[:80]!r}"
                ) from None


# ---- movies (the content model's input) ------------------------------------------------------
@dataclass(frozen=True)
class Catalog:
    """What is known about each movie besides its ratings: title, genres, user tags.

    ``movie_ids`` is sorted; the other lists are aligned with it.
    """

    movie_ids: np.ndarray  # int64, sorted
    titles: list[str]
    genres: list[list[str]]
    tags: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.movie_ids)


_NO_GENRE = {"(no genres listed)", "unknown"}
_ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def find_catalog(ratings_path: str | Path) -> Path | None:
    """The movies file next to a ratings file (movies.csv, movies.dat or u.item), if any."""
    directory = Path(ratings_path).parent
    for name in ("movies.csv", "movies.dat", "u.item"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_catalog(movies_path: str | Path, tags_path: str | Path | None = None) -> Catalog:
    """Movies (``movies.csv``, ``movies.dat`` or ``u.item``) and, for ml-latest, ``tags.csv``
    from the same folder unless ``tags_path`` names another file."""
    movies_path = Path(movies_path)
    if movies_path.name == "u.item":
        rows = _read_u_item(movies_path)
    elif movies_path.suffix == ".dat":
        rows = _read_movies_dat(movies_path)
    else:
        rows = _read_movies_csv(movies_path)
    if not rows:
        raise ValueError(f"{movies_path}: no movies")
    rows.sort(key=lambda r: r[0])
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{movies_path}: duplicate movie ids")
    tags_file = Path(tags_path) if tags_path else movies_path.with_name("tags.csv")
    tags: list[list[str]] = [[] for _ in rows]
    if tags_file.is_file():
        for movie, tag in _read_tags(tags_file):
            i = int(np.searchsorted(ids, movie))
            if i < len(ids) and ids[i] == movie:
                tags[i].append(tag)
    return Catalog(
        movie_ids=ids,
        titles=[r[1] for r in rows],
        genres=[[g for g in r[2] if g not in _NO_GENRE] for r in rows],
        tags=tags,
    )


def _read_movies_csv(path: Path) -> list[tuple[int, str, list[str]]]:
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [_normalise(c) or c.strip().lower() for c in next(reader, [])]
        if header[:1] != ["movie"] or "title" not in header:
            raise ValueError(f"{path}: expected header 'movieId,title,genres'")
        title_at = header.index("title")
        genres_at = header.index("genres") if "genres" in header else None
        for row in reader:
            if not row:
                continue
            genres = row[genres_at].split("|") if genres_at is not None else []
            rows.append((int(row[0]), row[title_at], genres))
    return rows


def _read_movies_dat(path: Path) -> list[tuple[int, str, list[str]]]:
    rows = []
    for line in path.read_bytes().decode("latin-1").splitlines():
        if line.strip():
            movie, title, genres = line.split("::", 2)
            rows.append((int(movie), title, genres.split("|")))
    return rows


def _read_u_item(path: Path) -> list[tuple[int, str, list[str]]]:
    rows = []
    for line in path.read_bytes().decode("latin-1").splitlines():
        parts = line.split("|")
        if len(parts) >= 5 + len(_ML100K_GENRES):
            flags = parts[5 : 5 + len(_ML100K_GENRES)]
            genres = [g for g, f in zip(_ML100K_GENRES, flags, strict=True) if f == "1"]
            title = parts[1] if "(" in parts[1] else f"{parts[1]} ({parts[2][-4:]})"
            rows.append((int(parts[0]), title, genres))
    return rows


def _read_tags(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [_normalise(c) or c.strip().lower() for c in next(reader, [])]
        if "movie" not in header or "tag" not in header:
            return
        movie_at, tag_at = header.index("movie"), header.index("tag")
        for row in reader:
            if len(row) > max(movie_at, tag_at) and row[movie_at].isdigit():
                yield int(row[movie_at]), row[tag_at]
