"""The movie page's HTML, rendered once per distinct content and filled per request.

Three pieces, each cached by its content (so a change of movie data, model version, plan or
price is a different key, never a stale page):

- the shell (``movie.html``: the site header, the movie's details, the footer) per (movie,
  logged in or not), with holes for the viewer's id and CSRF token and slots for the fragments;
- the plan box (``_plan.html``) per (subscription, plan choices), with holes for the movie id,
  the CSRF token and the form's idempotency key;
- the similar row (``_similar.html``) per (row, genre, degraded): no per-viewer content at all.

Jinja2 stays the one way pages are written; this only decides how often it runs.
"""

from __future__ import annotations

import jinja2
from aiohttp import web

from services.catalog.genres import primary_genre
from services.catalog.schemas import Movie
from services.platform.lru import Lru
from web_server.schemas import PlanBox, SimilarRow
from web_server.stencil import Stencil, hole

SHELLS_KEPT = 4096
PLAN_BOXES_KEPT = 256
ROWS_KEPT = 4096


class MovieFragments:
    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env
        self._shells: Lru[tuple[Movie, bool], Stencil] = Lru(SHELLS_KEPT)
        self._plans: Lru[PlanBox, Stencil] = Lru(PLAN_BOXES_KEPT)
        self._rows: Lru[tuple[SimilarRow, str | None, bool], str] = Lru(ROWS_KEPT)

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

    def similar_row(self, row: SimilarRow, movie: Movie, degraded: bool) -> str:
        genre = primary_genre(movie.genres) if row.source == "fallback" else None
        key = (row, genre, degraded)
        html = self._rows.get(key)
        if html is None:
            context = {"similar": row, "degraded": degraded, "genre": genre}
            html = self.env.get_template("_similar.html").render(context)
            self._rows.put(key, html)
        return html


FRAGMENTS = web.AppKey("movie_fragments", MovieFragments)
