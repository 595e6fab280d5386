"""Sessions (a signed cookie naming the user and their session generation), login/logout, and
CSRF tokens.

The session cookie is the token the subscription service granted at log-in
(``auth.session_token(user_id, secret, generation)``): the web server needs no session store,
and the subscription service checks the same token itself on every call. A CSRF token signs the
visitor's identity (``user:<id>``, or ``anon:<random>`` from a separate cookie before login) with
purpose "csrf", so a form posted from another site (which cannot read our pages) is refused.

Revocation: logging out moves the user to the next session generation, and a cookie of an
earlier one is dead. Asking the subscription service on every page would put a backend call on
the movie page's hot path, so ``SessionChecks`` remembers each user's current generation (and
account name) and asks again, in the background, once the answer is ``settings.session_recheck``
seconds old: a logout through another process ends the cookie here within that (plus one round
trip); a logout through this process ends it at once (the new generation is remembered when it
is made). A generation once seen is a floor: an older cookie is refused without asking anybody.
When the service cannot be asked (down, slow, open circuit) a cookie that is not known to be
dead is believed for this request, and the check is tried again on the next: a subscription
outage degrades the page instead of logging everybody out, and every write is still checked
exactly by the subscription logic, so a revoked cookie changes nothing.

``authenticate`` (a middleware) resolves the viewer once per request before the handler runs,
so ``current_user`` stays a plain function the templates and handlers can call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from services.platform import auth
from services.platform.app import SETTINGS
from services.platform.errors import Forbidden
from services.platform.lru import Lru
from services.subscription.schemas import SessionEnded, SessionGrant, SessionState
from web_server.clients import BackendError, BackendRejected
from web_server.state import CLIENTS

log = logging.getLogger("marquee.session")

SESSION_COOKIE = "marquee_session"
ANON_COOKIE = "marquee_anon"
LAST_MOVIE_COOKIE = "marquee_last_movie"
CSRF_FIELD = "csrf_token"
USERS_KEPT = 65536  # users whose session generation a process remembers
FIRST_CHECK_WAIT = 0.1  # seconds a page waits for the first check of a user (~1 ms when well)
_USER = web.RequestKey("marquee_user", object)  # Viewer | None, once per request
_NEW_ANON = web.RequestKey("marquee_new_anon", str)
# Paths that never show who is logged in: no session check for them.
_NO_VIEWER = ("/v1/", "/static/", "/healthz", "/readyz", "/metrics", "/openapi")


@dataclass(frozen=True)
class LoggedIn:
    """The visitor of this request: their user id, session generation and account name."""

    user_id: int
    generation: int
    name: str | None  # None for a demo login (a MovieLens user without an account)

    @property
    def label(self) -> str:
        """How the header names them: the account name, or "User <id>" for a demo login."""
        return self.name or f"User {self.user_id}"

    @property
    def initial(self) -> str:
        """The header's avatar: the name's first letter, or a demo user's id."""
        return self.name[:1].upper() if self.name else str(self.user_id)


@dataclass(frozen=True, slots=True)
class _Known:
    generation: int  # the user's current generation, as far as we know (it only ever grows)
    viewer: LoggedIn  # who a cookie of that generation is
    checked: float  # time.monotonic() of the answer


class SessionChecks:
    """Each user's current session generation as the subscription service last said it; one
    question in flight per user, whoever else waits for it.

    A user first seen (or presenting a newer generation than known) waits for the answer, at most
    ``FIRST_CHECK_WAIT``: a slow subscription service delays no page by more than that (the
    question goes on, and its answer serves the next request). An answer older than ``ttl`` is
    still used for the request that finds it, while a fresh one is asked for in the background:
    a page never waits for a re-check, and a cookie logged out elsewhere dies within ``ttl`` plus
    one round trip to the subscription service. A known generation never goes back (an answer
    overtaken by a logout this process made is dropped), so a cookie older than it is refused
    without asking anybody."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._known: Lru[int, _Known] = Lru(USERS_KEPT)
        self._asking: dict[int, asyncio.Task[SessionState | None]] = {}

    def remember(self, user_id: int, generation: int, name: str | None) -> None:
        """What this process just learnt first-hand: a log-in granted in ``generation``, or a
        logout that made ``generation`` the current one (older cookies die here at once)."""
        self._learn(SessionState(user_id, generation, name))

    def _learn(self, state: SessionState) -> None:
        known = self._known.get(state.user_id)
        if known is not None and known.generation > state.generation:
            return
        viewer = LoggedIn(state.user_id, state.generation, state.name)
        self._known.put(state.user_id, _Known(state.generation, viewer, self.clock()))

    async def viewer(self, app: web.Application, token: str) -> LoggedIn | None:
        settings = app[SETTINGS]
        claims = auth.session_claims(token, settings.secret_key, settings.session_max_age)
        if claims is None:
            return None
        known = self._known.get(claims.user_id)
        if known is not None and claims.generation <= known.generation:
            if claims.generation < known.generation:  # logged out since
                return None
            if self.clock() - known.checked > self.ttl:
                self._ask(app, claims.user_id, token)  # for the next request
            return known.viewer
        try:
            async with asyncio.timeout(FIRST_CHECK_WAIT):
                state = await asyncio.shield(self._ask(app, claims.user_id, token))
        except TimeoutError:  # the question goes on; its answer serves the next request
            state = None
        if state is None:  # not answered: believe the signature this once (see above)
            return LoggedIn(claims.user_id, claims.generation, None)
        if claims.generation != state.generation:
            return None
        return LoggedIn(claims.user_id, claims.generation, state.name)

    def _ask(
        self, app: web.Application, user_id: int, token: str
    ) -> asyncio.Task[SessionState | None]:
        """The question about ``user_id`` in flight, asked now if none is. Callers shield it: a
        visitor who leaves does not cancel the answer others wait for."""
        task = self._asking.get(user_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch(app, user_id, token))
            self._asking[user_id] = task
            task.add_done_callback(functools.partial(self._answered, user_id))
        return task

    def _answered(self, user_id: int, _: asyncio.Task[SessionState | None]) -> None:
        self._asking.pop(user_id, None)

    async def _fetch(self, app: web.Application, user_id: int, token: str) -> SessionState | None:
        settings = app[SETTINGS]
        subscriptions = app[CLIENTS].subscriptions
        try:
            state = await subscriptions.session_state(
                user_id, token, timeout=settings.subscription_timeout
            )
        except BackendRejected as exc:  # the service does not take this token: not logged in
            log.info("session refused", extra={"user_id": user_id, "code": exc.code})
            return SessionState(user_id, -1, None)  # matches no generation; not remembered
        except BackendError:
            return None
        self._learn(state)
        return state


SESSION_CHECKS = web.AppKey("session_checks", SessionChecks)


@web.middleware
async def authenticate(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    """Who is logged in, resolved once before the handler (a cached check per user)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token and len(token) <= 256 and not request.path.startswith(_NO_VIEWER):
        request[_USER] = await request.app[SESSION_CHECKS].viewer(request.app, token)
    return await handler(request)


def setup_sessions(app: web.Application) -> None:
    app[SESSION_CHECKS] = SessionChecks(app[SETTINGS].session_recheck)
    app.middlewares.append(authenticate)


def secure_cookie(request: web.Request) -> bool:
    """Cookies only over HTTPS: when the request came so, or always where TLS ends in front of
    us (``secure_cookies``: a proxy or an Ingress terminates it and forwards plain HTTP)."""
    return request.app[SETTINGS].secure_cookies or request.secure


def session_cookie(request: web.Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def viewer(request: web.Request) -> LoggedIn | None:
    """The logged-in visitor, or None (no cookie; a forged, expired or logged-out one)."""
    found = request.get(_USER)
    return found if isinstance(found, LoggedIn) else None


def current_user(request: web.Request) -> int | None:
    """The logged-in user id, or None."""
    found = viewer(request)
    return None if found is None else found.user_id


def current_label(request: web.Request) -> str | None:
    """How the header names the logged-in visitor: the account name, or "User <id>"."""
    found = viewer(request)
    return None if found is None else found.label


def current_initial(request: web.Request) -> str | None:
    found = viewer(request)
    return None if found is None else found.initial


def client_address(request: web.Request) -> str | None:
    """The visitor's address, for the log-in limits: the connection's peer, or with
    ``forwarded_hops`` proxies in front, the X-Forwarded-For entry the outermost of ours added
    (entries further left are whatever the visitor sent, so they are never believed)."""
    hops = request.app[SETTINGS].forwarded_hops
    if hops:
        entries = [e.strip() for e in request.headers.get("X-Forwarded-For", "").split(",")]
        entries = [e for e in entries if e]
        if len(entries) >= hops:
            return entries[-hops][:64]
    return request.remote


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
            ANON_COOKIE,
            anon,
            httponly=True,
            samesite="Lax",
            path="/",
            secure=secure_cookie(request),
        )


def login(request: web.Request, response: web.StreamResponse, grant: SessionGrant) -> None:
    """Set the session cookie to the token the subscription service granted."""
    request.app[SESSION_CHECKS].remember(grant.user_id, grant.generation, grant.name)
    response.set_cookie(
        SESSION_COOKIE,
        grant.token,
        max_age=grant.max_age,
        httponly=True,
        samesite="Lax",
        path="/",
        secure=secure_cookie(request),
    )


def logout(request: web.Request, response: web.StreamResponse, ended: SessionEnded | None) -> None:
    """Forget the session here: the cookie goes, and the generation ``ended`` made current is
    known in this process at once (None: there was no live session to end)."""
    if ended is not None:
        name = found.name if (found := viewer(request)) is not None else None
        request.app[SESSION_CHECKS].remember(ended.user_id, ended.generation, name)
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
        secure=secure_cookie(request),
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
