"""Replayed users (``--scenario replay --holdout FILE``): held-out people browse, and click only
what they went on to like.

The file is the chronological hold-out ``python -m recommender holdout`` (or ``evaluate
--holdout``) writes: per evaluated user, their training rows (``part=history``) and their
held-out positives (``part=heldout``). Models under test were trained on the training side, so
none of them saw a held-out rating.

One visit replays one user (a ``Flow``, sans I/O like every scenario):

1. log in by MovieLens user id (the development demo login: ``GET /login`` for the CSRF token,
   ``POST /login`` with ``user_id``), so the experiment assigns the user's arm;
2. open the movie pages of their history (``pages_to_open``: their most recent likes first);
3. on each page, read the similar row's tracked links (``/r/<token>/<movie id>`` inside
   ``<section class="shelf similar">``) and follow **one** - the first shown whose movie is one
   of their held-out positives they have not followed yet (``choose_click``). A page view counts
   at most one click on the server, and each positive is followed at most once per user, so
   the tool's clicks are exactly the clicks the server may count.

The redirect a followed link answers (303 to ``/movies/<id>``) is checked, not followed: that
page would be one more impression the replay did not choose to make.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.scenarios import (
    REDIRECTS,
    WEB,
    BadResponse,
    Flow,
    Request,
    extract_csrf,
    get,
    post_form,
)
from loadtest.workload import Workload

HEADER = ("user_id", "movie_id", "rating", "timestamp", "part")
LIKED = 4.0  # a history movie rated this or more is a like (the evaluation's positive)


@dataclass(frozen=True)
class HeldOutUser:
    """One evaluated user: training history (oldest first) and held-out positives."""

    user: int
    history: tuple[int, ...]
    ratings: tuple[float, ...]
    positives: frozenset[int]


def read_holdout(path: str | Path) -> list[HeldOutUser]:
    """Parse the hold-out CSV (``HEADER``; extra columns ignored); users by id. A malformed
    line is a ``ValueError`` naming the file and line."""
    histories: dict[int, list[tuple[int, int, float]]] = {}
    positives: dict[int, set[int]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[: len(HEADER)]] != list(HEADER):
            raise ValueError(f"{path}: expected the header {','.join(HEADER)}")
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                user, movie = int(row[0]), int(row[1])
                rating, stamp, part = float(row[2]), int(row[3]), row[4].strip()
            except (ValueError, IndexError):
                raise ValueError(
                    f"{path}:{lineno}: not user_id,movie_id,rating,timestamp,part"
                ) from None
            if part == "history":
                histories.setdefault(user, []).append((stamp, movie, rating))
            elif part == "heldout":
                positives.setdefault(user, set()).add(movie)
            else:
                raise ValueError(f"{path}:{lineno}: part must be history or heldout, got {part!r}")
    users = []
    for user in sorted(positives):
        rows = sorted(histories.get(user, []))
        users.append(
            HeldOutUser(
                user,
                tuple(m for _, m, _ in rows),
                tuple(r for _, _, r in rows),
                frozenset(positives[user]),
            )
        )
    if not users:
        raise ValueError(f"{path}: no user with held-out positives")
    return users


def select_users(users: Sequence[HeldOutUser], n: int | None, seed: int) -> list[HeldOutUser]:
    """``n`` users drawn with ``seed`` (all of them, shuffled, when ``n`` is None): the replay
    order. Seeded, so two runs replay the same people in the same order."""
    order = list(users)
    random.Random(seed).shuffle(order)
    return order if n is None else order[:n]


def pages_to_open(user: HeldOutUser, n: int) -> list[int]:
    """The ``n`` history movies whose pages the user opens: their likes (rated >= 4), most
    recent first, then the rest of their history, most recent first; each movie once."""
    seen: set[int] = set()
    recent = []
    for movie, rating in zip(reversed(user.history), reversed(user.ratings), strict=True):
        if movie not in seen:
            seen.add(movie)
            recent.append((rating < LIKED, movie))
    ordered = [movie for _, movie in sorted(recent, key=lambda pair: pair[0])]  # stable
    return ordered[:n]


_SIMILAR = re.compile(
    rb"""<section\b[^>]*\bclass=["'][^"']*\bsimilar\b[^"']*["'][^>]*>(.*?)</section>""", re.S
)
_LINK = re.compile(rb"""href=["'](/r/([^"'/?#]+)/(\d+))["']""")


def similar_links(html: bytes) -> list[tuple[str, int]]:
    """The similar row's tracked links, in the order shown: ``(path, movie id)``. Links
    outside the row (the rest of the page) are not part of the experiment and are ignored."""
    section = _SIMILAR.search(html)
    if section is None:
        return []
    out = []
    for match in _LINK.finditer(section.group(1)):
        out.append((match.group(1).decode("ascii", "replace"), int(match.group(3))))
    return out


def choose_click(
    links: Iterable[tuple[str, int]], positives: frozenset[int], followed: set[int]
) -> tuple[str, int] | None:
    """The click rule: the first link shown whose movie is a held-out positive the user has
    not followed yet; None when there is none (the user does not click)."""
    for path, movie in links:
        if movie in positives and movie not in followed:
            return path, movie
    return None


@dataclass
class UserOutcome:
    """What one replayed user did (filled in as the visit goes)."""

    user: int
    logged_in: bool = False
    pages: int = 0
    rows: int = 0  # pages whose similar row carried tracked links
    links: int = 0
    clicks: list[int] = field(default_factory=list)  # movies followed, in order


class ReplayUsers:
    """The scenario: each call replays the next selected user (the runner starts exactly as
    many visits as there are users). Outcomes are kept per user for the report."""

    def __init__(self, users: Sequence[HeldOutUser], pages_per_user: int) -> None:
        if not users:
            raise ValueError("no held-out users to replay")
        self.users = list(users)
        self.pages_per_user = pages_per_user
        self.next = 0
        self.outcomes: dict[int, UserOutcome] = {}

    def __call__(self, wl: Workload, rng: random.Random) -> Flow:
        user = self.users[self.next % len(self.users)]
        self.next += 1
        return self.visit(user)

    def visit(self, user: HeldOutUser) -> Flow:
        outcome = self.outcomes.setdefault(user.user, UserOutcome(user.user))
        login_page = yield get(WEB, "/login", "/login")
        token = extract_csrf(login_page.body)
        if token is None:
            raise BadResponse("no csrf_token on /login")
        answer = yield post_form(WEB, "/login", {"user_id": str(user.user), "csrf_token": token})
        if answer.status not in REDIRECTS:
            raise BadResponse(
                f"POST /login as user {user.user} answered {answer.status}, expected a redirect "
                "(demo logins need MARQUEE_DEVELOPMENT=true)"
            )
        outcome.logged_in = True
        followed: set[int] = set()
        for movie in pages_to_open(user, self.pages_per_user):
            page = yield get(WEB, "/movies/{id}", f"/movies/{movie}")
            outcome.pages += 1
            links = similar_links(page.body)
            if not links:
                continue
            outcome.rows += 1
            outcome.links += len(links)
            pick = choose_click(links, user.positives, followed)
            if pick is None:
                continue
            path, target = pick
            answer = yield Request(WEB, "GET", "/r/{token}/{id}", path)
            if answer.status not in REDIRECTS:
                raise BadResponse(f"GET {path} answered {answer.status}, expected a redirect")
            followed.add(target)
            outcome.clicks.append(target)
