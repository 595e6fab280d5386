"""Loading MovieLens ratings into flat numpy arrays.

Two on-disk formats are accepted, chosen by content rather than by file name:
``ratings.csv`` (``userId,movieId,rating,timestamp`` with a header, CRLF or LF) from the
ml-latest family and ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) from ml-1m/ml-10m.
Parsing is one vectorised pass (split the whole text, convert once) so a 20M-row file loads in
seconds; only when that fails do we scan line by line to report *where* the file is broken.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CSV_HEADER = ("userid", "movieid", "rating", "timestamp")


@dataclass(frozen=True)
class Interactions:
    """One row per rating event; all arrays have the same length."""

    user_ids: np.ndarray  # int64
    item_ids: np.ndarray  # int64 (external movie ids)
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # int64 (unix seconds)

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        if not (len(self.item_ids) == len(self.ratings) == len(self.timestamps) == n):
            raise ValueError("Interactions arrays must all have the same length")

    def __len__(self) -> int:
        return len(self.user_ids)

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


def data_hash(path: str | Path) -> str:
    """sha256 of the file bytes, streamed — recorded in model manifests for provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_ratings(path: str | Path) -> Interactions:
    """Read a MovieLens ratings file (``ratings.csv`` or ``ratings.dat``).

    Raises ``ValueError`` naming the first bad line when the file is malformed, and
    ``FileNotFoundError`` when it does not exist.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text ratings file ({exc})") from None
    if not text.strip():
        raise ValueError(f"{path}: empty ratings file")

    first_nl = text.find("\n")
    first_line = text[: first_nl if first_nl >= 0 else len(text)].strip()
    if "::" in first_line:
        sep, body, line_offset = "::", text, 1
    elif "," in first_line:
        sep = ","
        header = tuple(c.strip().lower() for c in first_line.split(","))
        if header == _CSV_HEADER:
            body, line_offset = (text[first_nl + 1 :] if first_nl >= 0 else ""), 2
        elif header[:1] and header[0].isdigit():
            body, line_offset = text, 1  # header-less csv
        else:
            raise ValueError(
                f"{path}: line 1: expected header 'userId,movieId,rating,timestamp', "
                f"got {first_line[:80]!r}"
            )
    else:
        raise ValueError(f"{path}: line 1: unrecognised format (expected ',' or '::' separated)")

    table = _parse_body(body, sep)
    if table is None:
        _raise_first_bad_line(path, body, sep, line_offset)
        raise ValueError(f"{path}: malformed ratings file")  # pragma: no cover - defensive
    users, items, ratings, stamps = table
    if len(users) == 0:
        raise ValueError(f"{path}: no ratings rows")
    return Interactions(
        user_ids=users.astype(np.int64),
        item_ids=items.astype(np.int64),
        ratings=ratings.astype(np.float32),
        timestamps=stamps.astype(np.int64),
    )


def _parse_body(body: str, sep: str) -> tuple[np.ndarray, ...] | None:
    """Fast path: one split + one float conversion; None if the shape or a value is off."""
    flat = body.replace(sep, " ").split()
    n_lines = sum(1 for line in body.splitlines() if line.strip())
    if len(flat) != 4 * n_lines:
        return None
    try:
        values = np.array(flat, dtype=np.float64).reshape(-1, 4)
    except ValueError:
        return None
    ids_and_time = values[:, [0, 1, 3]]
    if not np.all(np.isfinite(values)) or np.any(ids_and_time != np.floor(ids_and_time)):
        return None
    return values[:, 0], values[:, 1], values[:, 2], values[:, 3]


def _raise_first_bad_line(path: Path, body: str, sep: str, line_offset: int) -> None:
    for lineno, line in enumerate(body.splitlines(), start=line_offset):
        if not line.strip():
            continue
        parts = line.strip().split(sep)
        if len(parts) != 4:
            raise ValueError(
                f"{path}: line {lineno}: expected 4 fields separated by {sep!r}, "
                f"got {len(parts)}: {line[:80]!r}"
            )
        try:
            int(parts[0])
            int(parts[1])
            rating = float(parts[2])
            int(parts[3])
        except ValueError:
            raise ValueError(
                f"{path}: line {lineno}: user, movie and timestamp must be integers and the "
                f"rating a number: {line[:80]!r}"
            ) from None
        if not np.isfinite(rating):
            raise ValueError(f"{path}: line {lineno}: rating is not finite: {line[:80]!r}")
