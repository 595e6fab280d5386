"""Sessions (a signed cookie naming the MovieLens user), login/logout, and CSRF tokens.

The session cookie is ``auth.session_token(user_id, secret)``: the web server needs no session
store, and the subscription service can check the same token itself. A CSRF token signs the
visitor's identity (``user:<id>``, or ``anon:<random>`` from a separate cookie before login) with
purpose "csrf", so a form posted from another site (which cannot read our pages) is refused.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from services.platform import auth
from services.platform.app import SETTINGS
from services.platform.errors import Forbidden

SESSION_COOKIE = "marquee_session"
ANON_COOKIE = "marquee_anon"
LAST_MOVIE_COOKIE = "marquee_last_movie"
CSRF_FIELD = "csrf_token"
_USER: web.RequestKey[int | None] = web.RequestKey("marquee_user")  # once per request
_NEW_ANON = web.RequestKey("marquee_new_anon", str)


def _secure(request: web.Request) -> bool:
    """Cookies only over HTTPS: when the request came so, or always where TLS ends in front of
    us (``secure_cookies``: a proxy or an Ingress terminates it and forwards plain HTTP)."""
    return request.app[SETTINGS].secure_cookies or request.secure


def session_cookie(request: web.Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def current_user(request: web.Request) -> int | None:
    """The logged-in user id, or None (no cookie, a forged or expired one)."""
    if _USER not in request:
        settings = request.app[SETTINGS]
        request[_USER] = auth.session_user(
            session_cookie(request), settings.secret_key, settings.session_max_age
        )
    return request[_USER]


def _identity(request: web.Request) -> str:
    user = current_user(request)
    if user is not None:
        return f"user:{user}"
    anon = request.get(_NEW_ANON) or request.cookies.get(ANON_COOKIE, "")
    if not (16 <= len(anon) <= 64 and anon.replace("-", "").replace("_", "").isalnum()):
        anon = secrets.token_urlsafe(18)
        request[_NEW_ANON] = anon  # set as a cookie on the response (see set_anon_cookie)
    return f"anon:{anon}"


def csrf_token(request: web.Request) -> str:
    """The token every form carries in a hidden ``csrf_token`` field."""
    settings = request.app[SETTINGS]
    return auth.sign(_identity(request), settings.secret_key, purpose="csrf")


def csrf_ok(request: web.Request, token: object) -> bool:
    if not isinstance(token, str) or not token or len(token) > 256:
        return False
    settings = request.app[SETTINGS]
    value = auth.unsign(
        token, settings.secret_key, purpose="csrf", max_age=settings.session_max_age
    )
    return value is not None and value == _identity(request)


def require_csrf(request: web.Request, form: object) -> None:
    """Refuse (403) a POST whose form lacks this visitor's CSRF token; nothing is changed."""
    token = form.get(CSRF_FIELD) if hasattr(form, "get") else None
    if not csrf_ok(request, token):
        raise Forbidden(
            "this form has expired or did not come from Marquee; reload the page and try again",
            code="csrf",
        )


def set_anon_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Give a new anonymous visitor the cookie their CSRF tokens are bound to."""
    anon = request.get(_NEW_ANON)
    if anon and not response.prepared:
        response.set_cookie(
            ANON_COOKIE, anon, httponly=True, samesite="Lax", path="/", secure=_secure(request)
        )


def login(request: web.Request, response: web.StreamResponse, user_id: int) -> None:
    settings = request.app[SETTINGS]
    response.set_cookie(
        SESSION_COOKIE,
        auth.session_token(user_id, settings.secret_key),
        max_age=settings.session_max_age,
        httponly=True,
        samesite="Lax",
        path="/",
        secure=_secure(request),
    )


def logout(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")
    response.del_cookie(LAST_MOVIE_COOKIE, path="/")


def remember_movie(request: web.Request, response: web.StreamResponse, movie_id: int) -> None:
    """Remember the movie a logged-in viewer last opened, for "Because you watched" on home.

    The value is signed and bound to the user, so another user logging in on the same browser
    never sees it, and nobody can plant an arbitrary value.
    """
    user = current_user(request)
    if user is None or last_movie(request) == movie_id:
        return
    settings = request.app[SETTINGS]
    response.set_cookie(
        LAST_MOVIE_COOKIE,
        auth.sign(f"{user}:{movie_id}", settings.secret_key, purpose="last_movie"),
        max_age=settings.session_max_age,
        httponly=True,
        samesite="Lax",
        path="/",
        secure=_secure(request),
    )


def last_movie(request: web.Request) -> int | None:
    """The movie this logged-in viewer last opened, or None (none yet, another user's, forged)."""
    user = current_user(request)
    token = request.cookies.get(LAST_MOVIE_COOKIE)
    if user is None or not token or len(token) > 256:
        return None
    settings = request.app[SETTINGS]
    value = auth.unsign(
        token, settings.secret_key, purpose="last_movie", max_age=settings.session_max_age
    )
    owner, _, movie = (value or "").partition(":")
    if owner != str(user) or not movie.isdigit():
        return None
    return int(movie)
