"""The movie page's HTML, rendered once per distinct content and filled per request.

Three pieces, each cached by its content (so a change of movie data, model version, plan or
price is a different key, never a stale page):

- the shell (``movie.html``: the site header, the movie's details, the footer) per (movie,
  logged in or not), with holes for the viewer's id and CSRF token and slots for the fragments;
- the plan box (``_plan.html``) per (subscription, plan choices), with holes for the movie id,
  the CSRF token and the form's idempotency key;
- the similar row (``_similar.html``) per (row, genre, degraded), the row carrying the model
  version that made it: no per-viewer content, but a model's row is *tracked*: its links go
  through ``/r/<token>/<movie id>`` (``web_server.feedback``), and the one token of the page
  view fills every link's hole by a string join. The row's ids are listed once per cached row.

Jinja2 stays the one way pages are written; this only decides how often it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from aiohttp import web
from markupsafe import Markup

from services.catalog.genres import primary_genre
from services.catalog.schemas import Movie
from services.platform.lru import Lru
from web_server.schemas import PlanBox, SimilarRow
from web_server.stencil import Stencil, hole

TOKEN_HOLE = hole("token")
TRACKED_HREF = Markup("/r/") + TOKEN_HOLE + Markup("/")

SHELLS_KEPT = 4096
PLAN_BOXES_KEPT = 256
ROWS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class RowFragment:
    """A rendered similar row: ``parts`` is the text around the token holes (one part: an
    untracked row, no holes), ``ids`` the movies in the order shown (a tracked row's)."""

    parts: tuple[str, ...]
    ids: list[int]  # shared by every event of the row: never mutated

    @property
    def tracked(self) -> bool:
        return len(self.parts) > 1

    def html(self, token: str = "") -> str:
        """The row with ``token`` (url-safe: base64url, digits, dots; no escaping needed) in
        every link."""
        return token.join(self.parts)


class MovieFragments:
    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env
        self._shells: Lru[tuple[Movie, bool], Stencil] = Lru(SHELLS_KEPT)
        self._plans: Lru[PlanBox, Stencil] = Lru(PLAN_BOXES_KEPT)
        self._rows: Lru[tuple[SimilarRow, str | None, bool], RowFragment] = Lru(ROWS_KEPT)

    def shell(self, movie: Movie, logged_in: bool) -> Stencil:
        """Holes: ``user``, ``user_label``, ``user_initial``, ``csrf`` (logged in only).
        Slots: ``plan``, ``similar``."""
        key = (movie, logged_in)
        stencil = self._shells.get(key)
        if stencil is None:
            context = {
                "movie": movie,
                "user": hole("user") if logged_in else None,
                "user_label": hole("user_label") if logged_in else None,
                "user_initial": hole("user_initial") if logged_in else None,
                "csrf_token": lambda: hole("csrf"),
                "request_path": f"/movies/{movie.id}",
            }
            stencil = Stencil(self.env.get_template("movie.html").render(context))
            self._shells.put(key, stencil)
        return stencil

    def plan_box(self, box: PlanBox) -> Stencil:
        """Holes: ``movie_id``, ``csrf``, ``key`` (forms only for a logged-in viewer)."""
        stencil = self._plans.get(box)
        if stencil is None:
            context = {
                "plan": box.subscription,
                "plans": box.choices,
                "movie": {"id": hole("movie_id")},
                "idempotency_key": hole("key"),
                "csrf_token": lambda: hole("csrf"),
            }
            stencil = Stencil(self.env.get_template("_plan.html").render(context))
            self._plans.put(box, stencil)
        return stencil

    def similar_row(self, row: SimilarRow, movie: Movie, degraded: bool) -> RowFragment:
        """The row's HTML; tracked when a model version made it and it has movies (the
        popular-in-genre fallback is not tracked: no model's choice to learn from)."""
        genre = primary_genre(movie.genres) if row.source == "fallback" else None
        key = (row, genre, degraded)
        fragment = self._rows.get(key)
        if fragment is None:
            tracked = row.model_version is not None and row.source != "fallback" and row.items
            context = {
                "similar": row,
                "degraded": degraded,
                "genre": genre,
                "href": TRACKED_HREF if tracked else "/movies/",
            }
            html = self.env.get_template("_similar.html").render(context)
            ids = [item.movie_id for item in row.items] if tracked else []
            fragment = RowFragment(tuple(html.split(str(TOKEN_HOLE))), ids)
            self._rows.put(key, fragment)
        return fragment


FRAGMENTS = web.AppKey("movie_fragments", MovieFragments)
