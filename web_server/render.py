"""Jinja2 setup (autoescaped, compiled once), template helpers, and HTML error pages.

The platform middleware answers errors as JSON, which is right for ``/v1`` and ``/api``. For the
HTML pages an inner middleware renders the same ``ApiError`` (and unmatched paths) as a page with
the same status, so a browser never sees JSON or a traceback.
"""

from __future__ import annotations

import logging
import re

import aiohttp_jinja2
import jinja2
from aiohttp import web

from services.platform.app import SETTINGS
from services.platform.errors import ApiError
from web_server import session
from web_server.streaming import slot

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
    403: "That action was refused",
    404: "Not found",
    503: "Temporarily unavailable",
}


def poster_colour(genres: list[str] | None) -> str:
    for genre in genres or []:
        if genre in GENRE_COLOURS:
            return GENRE_COLOURS[genre]
    return "#4b5563"


def genre_colours(genres: list[str] | None) -> tuple[str, str]:
    """Two colours for a poster placeholder's gradient: its first two known genres."""
    known = [GENRE_COLOURS[g] for g in genres or [] if g in GENRE_COLOURS]
    first = known[0] if known else "#4b5563"
    return first, known[1] if len(known) > 1 else "#111827"


def initials(title: str | None) -> str:
    """Up to two letters standing in for a poster: "Toy Story" -> "TS"."""
    words = re.findall(r"[^\W_]+", title or "")
    skip = {"the", "a", "an", "of", "and"}
    picked = [w for w in words if w.lower() not in skip] or words
    return "".join(w[0] for w in picked[:2]).upper() or "?"


NO_GENRE = "(no genres listed)"


def cards(items: list[dict] | None) -> list[dict]:
    """What the card list template prints for each movie, computed here once: Jinja's macro
    calls and attribute lookups cost several times more than this Python (rendering was ~40%
    of an HTML page's CPU, most of it the card → poster macros of the 12 similar movies)."""
    out = []
    for item in items or ():
        genres = item.get("genres") or ()
        c1, c2 = genre_colours(genres)
        genre = next((g for g in genres if g != NO_GENRE), None)
        rating, score = item.get("rating_mean"), item.get("score")
        out.append(
            {
                "id": item.get("movie_id") or item.get("id"),
                "title": item.get("title"),
                "year": item.get("year"),
                "c1": c1,
                "c2": c2,
                "genre": genre,
                "initials": initials(item.get("title")),
                "rating": f"{rating:.1f}" if _is_number(rating) else None,
                "score": f"{score:.2f}" if _is_number(score) else None,
            }
        )
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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


async def _context(request: web.Request) -> dict:
    return {
        "user": session.current_user(request),
        "csrf_token": lambda: session.csrf_token(request),
        "request_path": request.path,
    }


def setup_templates(app: web.Application) -> None:
    settings = app[SETTINGS]
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(settings.templates_dir)),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"], default_for_string=True),
        auto_reload=False,  # compiled once per process
        context_processors=[_context],
        undefined=jinja2.ChainableUndefined,
    )
    env.globals.update(
        poster_colour=poster_colour,
        initials=initials,
        imdb_url=imdb_url,
        tmdb_url=tmdb_url,
        price=price,
        slot=slot,
        genre_colours=genre_colours,
        cards=cards,
    )
    static = settings.templates_dir / "static"
    if static.is_dir():
        app.router.add_static("/static", static, name="static")


def is_html_path(path: str) -> bool:
    return not path.startswith(NON_HTML_PREFIXES)


def error_page(
    request: web.Request, status: int, message: str, *, headers: dict | None = None
) -> web.Response:
    response = aiohttp_jinja2.render_template(
        "error.html",
        request,
        {"status": status, "title": TITLES.get(status, "Something went wrong"), "message": message},
        status=status,
    )
    if headers:
        response.headers.update(headers)
    return response


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
