"""Jinja2 setup (autoescaped, compiled once), template helpers, and HTML error pages.

The platform middleware answers errors as JSON, which is right for ``/v1`` and ``/api``. For the
HTML pages an inner middleware renders the same ``ApiError`` (and unmatched paths) as a page with
the same status, so a browser never sees JSON or a traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import jinja2
from aiohttp import web

from services.catalog.genres import DISTINCTIVE_FIRST, primary_genre
from services.catalog.schemas import Movie
from services.platform.app import SETTINGS
from services.platform.errors import ApiError
from services.platform.middleware import RETRY_AFTER_UNAVAILABLE
from web_server import session
from web_server.fragments import FRAGMENTS, MovieFragments
from web_server.schemas import PageItem
from web_server.stencil import slot

log = logging.getLogger("marquee.web")

NON_HTML_PREFIXES = ("/v1/", "/api/", "/static/", "/healthz", "/readyz", "/metrics", "/openapi")

GENRE_COLOURS = {
    "Action": "#b23a48",
    "Adventure": "#c46d1b",
    "Animation": "#2a9d8f",
    "Children": "#3a86ff",
    "Comedy": "#d4a017",
    "Crime": "#5c4d7d",
    "Documentary": "#4a7c59",
    "Drama": "#7b2d26",
    "Fantasy": "#8e44ad",
    "Film-Noir": "#333c48",
    "Horror": "#5a1a1a",
    "IMAX": "#1d6fa3",
    "Musical": "#c2185b",
    "Mystery": "#34495e",
    "Romance": "#d3546d",
    "Sci-Fi": "#1b7a8c",
    "Thriller": "#6d4c41",
    "War": "#556b2f",
    "Western": "#a0522d",
}

TITLES = {
    400: "That request was not quite right",
    401: "Please log in",
    403: "That action was refused",
    404: "Not found",
    405: "Not allowed here",
    409: "That conflicts with what is there",
    410: "That link has expired",
    413: "That is too large",
    415: "That kind of content is not accepted",
    429: "Too many attempts",
    503: "Temporarily unavailable",
}


def genre_colours(genres: Iterable[str] | None) -> tuple[str, str]:
    """Two colours for a poster placeholder's gradient: its two most distinctive genres."""
    known = sorted((g for g in genres or () if g in GENRE_COLOURS), key=_badge_rank)
    first = GENRE_COLOURS[known[0]] if known else "#4b5563"
    return first, GENRE_COLOURS[known[1]] if len(known) > 1 else "#111827"


def _badge_rank(genre: str) -> int:
    return _RANKS.get(genre, len(_RANKS))


_RANKS = {genre: rank for rank, genre in enumerate(DISTINCTIVE_FIRST)}


def initials(title: str | None) -> str:
    """Up to two letters standing in for a poster: "Toy Story" -> "TS"."""
    words = re.findall(r"[^\W_]+", title or "")
    skip = {"the", "a", "an", "of", "and"}
    picked = [w for w in words if w.lower() not in skip] or words
    return "".join(w[0] for w in picked[:2]).upper() or "?"


class Card(NamedTuple):
    """What the card list template prints for one movie."""

    id: int
    title: str
    year: int | None
    c1: str
    c2: str
    genre: str | None
    initials: str
    rating: str | None


def cards(items: Iterable[Movie | PageItem] | None) -> list[Card]:
    """The card list's fields, computed here once: Jinja's macro calls and attribute lookups
    cost several times more than this Python. Viewers see the average rating where the catalog
    has one; the recommender's raw scores are for the API, not for people."""
    out = []
    for item in items or ():
        genres = item.genres
        c1, c2 = genre_colours(genres)
        rating = item.rating_mean if isinstance(item, Movie) else None
        out.append(
            Card(
                item.id if isinstance(item, Movie) else item.movie_id,
                item.title,
                item.year,
                c1,
                c2,
                primary_genre(genres),
                initials(item.title),
                None if rating is None else f"{rating:.1f}",
            )
        )
    return out


def imdb_url(imdb_id: str | int | None) -> str | None:
    if not imdb_id:
        return None
    digits = str(imdb_id).removeprefix("tt")
    return f"https://www.imdb.com/title/tt{int(digits):07d}/" if digits.isdigit() else None


def tmdb_url(tmdb_id: int | None) -> str | None:
    return f"https://www.themoviedb.org/movie/{int(tmdb_id)}" if tmdb_id else None


def price(cents: int | None, currency: str | None = "USD") -> str:
    if cents is None:
        return ""
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get((currency or "").upper())
    amount = f"{cents / 100:.2f}"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


TEMPLATES = web.AppKey("templates", jinja2.Environment)

# Every HTML page: no framing (clickjacking), no content sniffing, no referrer to other sites,
# and a content policy that allows our own stylesheet and the poster colours' style attributes,
# and nothing else: no script, no object, forms post only to us.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "style-src-attr 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def render(request: web.Request, template: str, context: Mapping[str, object]) -> str:
    """A template rendered for this request: the context plus what every page's frame needs
    (the viewer, their CSRF token, the path). Only what a handler renders pays for these."""
    full = {
        "user": session.current_user(request),
        "user_label": session.current_label(request),
        "user_initial": session.current_initial(request),
        "csrf_token": lambda: session.csrf_token(request),
        "request_path": request.path,
        **context,
    }
    return request.app[TEMPLATES].get_template(template).render(full)


def page(
    request: web.Request,
    template: str,
    context: Mapping[str, object],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    response = web.Response(
        text=render(request, template, context),
        status=status,
        content_type="text/html",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )
    session.set_anon_cookie(request, response)
    return response


def environment(templates_dir: Path) -> jinja2.Environment:
    """The Jinja2 environment of Marquee's templates: autoescaped, compiled once per process."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"], default_for_string=True),
        auto_reload=False,
        undefined=jinja2.ChainableUndefined,
    )
    env.globals.update(
        primary_genre=primary_genre,
        initials=initials,
        imdb_url=imdb_url,
        tmdb_url=tmdb_url,
        price=price,
        slot=slot,
        genre_colours=genre_colours,
        cards=cards,
    )
    return env


def setup_templates(app: web.Application) -> None:
    templates_dir = app[SETTINGS].templates_dir
    env = environment(templates_dir)
    app[TEMPLATES] = env
    app[FRAGMENTS] = MovieFragments(env)
    static = templates_dir / "static"
    if static.is_dir():
        app.router.add_static("/static", static, name="static")


def is_html_path(path: str) -> bool:
    return not path.startswith(NON_HTML_PREFIXES)


def error_page(
    request: web.Request,
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    link: tuple[str, str] | None = None,
) -> web.Response:
    """The error page; ``link`` (a local path, its text) offers the way on, first."""
    context = {
        "status": status,
        "title": TITLES.get(status, "Something went wrong"),
        "link": link,
    }
    if status == 503:  # unavailable for now: say when to come back
        headers = {"Retry-After": RETRY_AFTER_UNAVAILABLE, **(headers or {})}
    return page(
        request, "error.html", {**context, "message": message}, status=status, headers=headers
    )


@web.middleware
async def html_errors(request: web.Request, handler) -> web.StreamResponse:
    """Errors on HTML routes become HTML pages; API routes keep the platform's JSON errors."""
    if not is_html_path(request.path):
        return await handler(request)
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_page(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            session.set_anon_cookie(request, exc)
            raise
        message = {
            404: "There is no page at this address.",
            405: "This address does not accept that method.",
        }.get(exc.status, exc.reason)
        response = error_page(request, exc.status, message)
    except Exception:
        log.exception("page failed", extra={"path": request.path})
        response = error_page(request, 500, "Something went wrong on our side.")
    session.set_anon_cookie(request, response)
    return response
