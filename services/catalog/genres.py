"""Which of a movie's genres names it best: MovieLens lists genres alphabetically, so the first
one says little (Toy Story would be "Adventure"). The most distinctive genre is the rarest one:
by the number of ml-latest-small movies in each, fewest first. IMAX is a format, not a genre."""

from __future__ import annotations

from collections.abc import Iterable

DISTINCTIVE_FIRST = (
    "Film-Noir",
    "Western",
    "Musical",
    "War",
    "Documentary",
    "Mystery",
    "Animation",
    "Children",
    "Fantasy",
    "Horror",
    "Sci-Fi",
    "Crime",
    "Adventure",
    "Romance",
    "Action",
    "Thriller",
    "Comedy",
    "Drama",
)
_RANK = {genre: rank for rank, genre in enumerate(DISTINCTIVE_FIRST)}


def primary_genre(genres: Iterable[str]) -> str | None:
    """The movie's most distinctive genre ("Animation" for Toy Story), None without one."""
    ranked = [g for g in genres if g in _RANK]
    return min(ranked, key=_RANK.__getitem__) if ranked else None
