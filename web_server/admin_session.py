"""The operator's session for ``/admin``: logging in with the admin token, the session cookie,
and the limit on wrong tokens.

- The cookie (``marquee_admin``) is an ``auth.sign`` token whose *purpose* names a fingerprint
  of the admin token (an HMAC of it under the secret key, so neither the cookie nor the
  fingerprint tells anything about the token). Rotating ``admin_token`` changes the purpose,
  so every admin session made with the old token fails its signature check at once, in every
  process: no session store, and nothing to revoke one by one.
- It is scoped to ``Path=/admin``, ``HttpOnly``, ``SameSite=Strict`` (a link from another site
  arrives without it) and ``Secure`` under the same rule as the site's cookies. It lives
  ``admin_session_max_age`` seconds; logging out drops it from this browser. A copied cookie
  lives until it expires or the token rotates (say so in the runbook: rotate on suspicion).
- Wrong tokens are limited per client address with the subscription service's token buckets:
  ``LOGIN_LIMIT`` failures at once, then one a minute. The buckets are per process, like the
  account log-in limits (``services.subscription.accounts`` explains why that is enough).
- With no admin token configured there is no dashboard: every ``/admin`` path is a 404 that says
  how to turn it on.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from aiohttp import web

from services.platform import auth
from services.platform.app import SETTINGS
from services.platform.settings import Settings
from services.subscription.throttle import TokenBuckets
from web_server.session import secure_cookie

ADMIN_COOKIE = "marquee_admin"
ADMIN_PATH = "/admin"
OPERATOR = "operator"  # the signed value: there is one kind of operator
LOGIN_LIMIT = (5, 1 / 60)  # wrong tokens at once, then per second: per client address
MAX_TOKEN = 256  # characters of a typed token or a cookie considered at all

ADMIN_LOGINS = web.AppKey("admin_logins", TokenBuckets)


def enabled(settings: Settings) -> bool:
    """The dashboard exists only where an admin token is configured."""
    return bool(settings.admin_token)


def fingerprint(settings: Settings) -> str:
    """Which admin token a session was made with, without revealing it."""
    mac = hmac.new(settings.secret_key.encode(), b"admin-token|", hashlib.sha256)
    mac.update(settings.admin_token.encode())
    return mac.hexdigest()[:32]


def _purpose(settings: Settings) -> str:
    return f"admin:{fingerprint(settings)}"


def token_ok(settings: Settings, typed: str) -> bool:
    """The typed token is the admin token (compared in constant time)."""
    if not enabled(settings) or not typed or len(typed) > MAX_TOKEN:
        return False
    return hmac.compare_digest(typed.encode(), settings.admin_token.encode())


def session_value(settings: Settings, now: float | None = None) -> str:
    """A fresh admin session cookie value."""
    return auth.sign(
        OPERATOR, settings.secret_key, purpose=_purpose(settings), now=now or time.time()
    )


def is_operator(request: web.Request) -> bool:
    """The request carries a live admin session made with the current admin token."""
    settings = request.app[SETTINGS]
    token = request.cookies.get(ADMIN_COOKIE)
    if not enabled(settings) or not token or len(token) > MAX_TOKEN:
        return False
    value = auth.unsign(
        token,
        settings.secret_key,
        purpose=_purpose(settings),
        max_age=settings.admin_session_max_age,
    )
    return value == OPERATOR


def start(request: web.Request, response: web.StreamResponse) -> None:
    """Log the operator in on this browser."""
    settings = request.app[SETTINGS]
    response.set_cookie(
        ADMIN_COOKIE,
        session_value(settings),
        max_age=settings.admin_session_max_age,
        httponly=True,
        samesite="Strict",
        path=ADMIN_PATH,
        secure=secure_cookie(request),
    )


def end(response: web.StreamResponse) -> None:
    response.del_cookie(ADMIN_COOKIE, path=ADMIN_PATH)


def setup_admin_sessions(app: web.Application) -> None:
    app[ADMIN_LOGINS] = TokenBuckets(*LOGIN_LIMIT)
