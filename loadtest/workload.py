"""What the simulated traffic asks for: movie ids by popularity, search words, genres, users.

Real traffic is skewed: a few movies get most views. The workload is ranked by popularity
(from the catalog, or the bundled ratings when the catalog is unreachable) and sampled from
a Zipf-like distribution, so caches see a realistic hit ratio instead of a uniform worst case.
"""

from __future__ import annotations

import bisect
import csv
import json
import random
import re
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

_YEAR = re.compile(r"\(\d{4}\)")
_WORD = re.compile(r"[A-Za-z][A-Za-z']+")
_STOP = frozenset({"with", "from", "this", "that", "what", "when", "your", "part"})


@dataclass(frozen=True)
class Movie:
    """One sampleable movie: its id, title, genres and popularity (rating count)."""

    id: int
    title: str
    genres: tuple[str, ...]
    rating_count: int


@dataclass(frozen=True)
class Workload:
    """Immutable sampling tables; ``source`` says where the popularity came from."""

    movie_ids: tuple[int, ...]  # ordered by popularity rank (most popular first)
    cum_weights: tuple[float, ...]
    search_words: tuple[str, ...]
    genres: tuple[str, ...]
    user_ids: tuple[int, int]
    source: str
    # the same, restricted to movies the recommender's model knows (it answers 404 for others)
    known_ids: tuple[int, ...] = ()
    known_cum_weights: tuple[float, ...] = ()

    def movie(self, rng: random.Random) -> int:
        """A movie id drawn from the popularity distribution."""
        x = rng.random() * self.cum_weights[-1]
        return self.movie_ids[bisect.bisect_right(self.cum_weights, x)]

    def known_movie(self, rng: random.Random) -> int:
        """A movie the model has neighbours for (any movie when that is not known)."""
        if not self.known_ids:
            return self.movie(rng)
        x = rng.random() * self.known_cum_weights[-1]
        return self.known_ids[bisect.bisect_right(self.known_cum_weights, x)]

    def movies(self, rng: random.Random, n: int) -> list[int]:
        """``n`` distinct-ish movie ids (duplicates removed, order kept)."""
        seen: dict[int, None] = {}
        for _ in range(n * 3):
            seen[self.movie(rng)] = None
            if len(seen) >= n:
                break
        return list(seen)

    def user(self, rng: random.Random) -> int:
        return rng.randint(*self.user_ids)

    def search(self, rng: random.Random) -> tuple[str, str | None]:
        """A search query word and, one time in five, a genre filter."""
        word = rng.choice(self.search_words) if self.search_words else "love"
        genre = rng.choice(self.genres) if self.genres and rng.random() < 0.2 else None
        return word, genre

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "movies": len(self.movie_ids),
            "search_words": len(self.search_words),
            "genres": len(self.genres),
            "top_movie_share": round(self.cum_weights[0] / self.cum_weights[-1], 4),
            "known_to_model": len(self.known_ids) if self.known_ids else None,
        }


def build_workload(
    movies: Sequence[Movie],
    *,
    popularity: str,
    zipf_s: float,
    user_ids: tuple[int, int],
    source: str,
    known: set[int] | None = None,
) -> Workload:
    """Rank movies by rating count and derive the sampling weights.

    ``counts`` weights each movie by its rating count (the empirical popularity);
    ``zipf`` weights rank ``r`` (1-based) by ``1 / r**s``.
    """
    if not movies:
        raise ValueError("no movies to sample from")
    ranked = sorted(movies, key=lambda m: (-m.rating_count, m.id))
    if popularity == "zipf":
        weights: Iterable[float] = (1.0 / (rank**zipf_s) for rank in range(1, len(ranked) + 1))
    else:
        weights = (max(m.rating_count, 1) for m in ranked)
    words: dict[str, None] = {}
    genres: dict[str, None] = {}
    for m in ranked:
        for w in _WORD.findall(_YEAR.sub("", m.title)):
            if len(w) >= 4 and w.lower() not in _STOP:
                words[w.lower()] = None
        for g in m.genres:
            if g and g != "(no genres listed)":
                genres[g] = None
    ids = tuple(m.id for m in ranked)
    cum = tuple(accumulate(float(w) for w in weights))
    known_ids: tuple[int, ...] = ()
    known_cum: tuple[float, ...] = ()
    if known is not None:
        pairs = [
            (mid, hi - lo)
            for mid, lo, hi in zip(ids, (0.0, *cum), cum, strict=False)
            if mid in known
        ]
        known_ids = tuple(mid for mid, _ in pairs)
        known_cum = tuple(accumulate(w for _, w in pairs))
    return Workload(
        movie_ids=ids,
        cum_weights=cum,
        search_words=tuple(words),
        genres=tuple(genres),
        user_ids=user_ids,
        source=source,
        known_ids=known_ids,
        known_cum_weights=known_cum,
    )


def _genres(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(g for g in value.split("|") if g)
    if isinstance(value, list):
        return tuple(str(g) for g in value)
    return ()


def movies_from_popular(payload: Any) -> list[Movie]:
    """Parse the catalog's ``/v1/movies/popular`` answer (``{"items": [...]}``)."""
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise ValueError("popular response has no 'items' list")
    out = []
    for item in items:
        if not isinstance(item, dict) or "id" not in item:
            continue
        out.append(
            Movie(
                id=int(item["id"]),
                title=str(item.get("title", "")),
                genres=_genres(item.get("genres")),
                rating_count=int(item.get("rating_count") or 0),
            )
        )
    return out


def movies_from_files(data_dir: str | Path, limit: int) -> list[Movie]:
    """Fallback: rating counts from the bundled MovieLens ratings.csv, titles from movies.csv."""
    data = Path(data_dir)
    counts: Counter[int] = Counter()
    with open(data / "ratings.csv", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for row in reader:
            if len(row) >= 2:
                counts[int(row[1])] += 1
    titles: dict[int, tuple[str, tuple[str, ...]]] = {}
    movies_csv = data / "movies.csv"
    if movies_csv.exists():
        with open(movies_csv, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            for row in reader:
                if len(row) >= 3:
                    titles[int(row[0])] = (row[1], _genres(row[2]))
    return [
        Movie(
            id=mid,
            title=titles.get(mid, ("", ()))[0],
            genres=titles.get(mid, ("", ()))[1],
            rating_count=n,
        )
        for mid, n in counts.most_common(limit)
    ]


POPULAR_PAGE = 100  # the catalog's largest page (it rejects more)
BATCH_IDS = 100  # the recommender's largest batch


def fetch_popular(catalog_base: str, limit: int, timeout: float) -> list[Movie]:
    """Ask the catalog for the most popular movies, a page at a time (raises on any failure).

    A plain blocking fetch: it runs once before the load starts (and in Locust, once per
    process), so it needs no engine and only the standard library.
    """
    movies: list[Movie] = []
    while len(movies) < limit:
        page = min(POPULAR_PAGE, limit - len(movies))
        query = urlencode({"limit": page, "offset": len(movies)})
        url = f"{catalog_base}/v1/movies/popular?{query}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the user's URL
            payload = json.load(resp)
        batch = movies_from_popular(payload)
        movies.extend(batch)
        if len(batch) < page:  # the catalog has no more
            break
    if not movies:
        raise ValueError("catalog returned no movies")
    return movies


def known_to_model(recommender_base: str, ids: Sequence[int], timeout: float) -> set[int]:
    """Which of ``ids`` the recommender's model knows: its batch endpoint lists the others as
    ``missing`` (a model only knows movies someone rated well). Raises on any failure."""
    missing: set[int] = set()
    for start in range(0, len(ids), BATCH_IDS):
        chunk = ",".join(map(str, ids[start : start + BATCH_IDS]))
        url = f"{recommender_base}/v1/similar?ids={chunk}&k=1"
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the user's URL
            payload = json.load(resp)
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
            raise ValueError("batch similar answer has no 'results'")
        missing.update(int(m) for m in payload.get("missing") or [])
    return set(ids) - missing


def load_workload(
    *,
    catalog_base: str,
    limit: int,
    popularity: str,
    zipf_s: float,
    user_ids: tuple[int, int],
    data_dir: str | Path,
    timeout: float = 3.0,
    recommender_base: str | None = None,
) -> tuple[Workload, str | None]:
    """Catalog first, bundled data second; returns the workload and a warning (or None).

    With ``recommender_base``, also asks which movies the model knows, so the ``similar``
    scenario asks about those only (a 404 for an unknown movie is the API's correct answer,
    not a failure worth reporting).
    """
    warning = None
    try:
        movies = fetch_popular(catalog_base, limit, timeout)
        source = f"catalog {catalog_base}"
    except (OSError, ValueError, TypeError, KeyError) as exc:  # URLError/HTTPError are OSErrors
        warning = (
            f"catalog popular list unavailable ({type(exc).__name__}: {exc}); "
            f"using rating counts from {data_dir}"
        )
        movies = movies_from_files(data_dir, limit)
        source = f"file {data_dir}"
    known = None
    if recommender_base is not None:
        try:
            known = known_to_model(recommender_base, [m.id for m in movies], timeout)
        except (OSError, ValueError, TypeError) as exc:
            note = f"could not ask the recommender which movies it knows ({exc})"
            warning = f"{warning}; {note}" if warning else note
    workload = build_workload(
        movies,
        popularity=popularity,
        zipf_s=zipf_s,
        user_ids=user_ids,
        source=source,
        known=known,
    )
    return workload, warning
