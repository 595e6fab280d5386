"""Signed tokens (sessions, CSRF) and constant-time token checks.

A session token is ``<user_id>.<generation>.<issued>.<mac>`` with an HMAC-SHA256 over the first
three parts. The web server sets it as a cookie; it passes it on to the subscription service in
``X-Marquee-Session`` so that service can check for itself that the writer is the user whose plan
changes.

The signature proves who the subscription service said the holder was; the *generation* makes a
token revocable. Each user has a session generation in the subscription service's database
(``services.subscription.accounts``); logging out bumps it, and a token carrying an older
generation is dead everywhere that checks it (the subscription service on every call, the web
server within ``session_recheck`` seconds). This module checks only the signature and the age:
``session_claims`` says whose token it is and of which generation, the caller compares the
generation. A token of the earlier ``<user_id>.<issued>.<mac>`` form is refused, so the sessions
made before accounts existed (by a user id alone) all ended with the upgrade.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import NamedTuple

from services.platform.lru import Lru

SESSION_HEADER = "X-Marquee-Session"


def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# Every page checks a session token and signs a CSRF token: an HMAC each, a tenth of a cached
# page's CPU. Tokens already checked are remembered (the expiry is still checked on every use),
# and a token signed in the last minute is handed out again: it is as valid as a new one.
_checked: Lru[tuple[str, str, str], tuple[str, int]] = Lru(16384)
_signed: Lru[tuple[str, str, str], str] = Lru(16384, ttl=60.0)


def sign(value: str, secret: str, *, purpose: str, now: float | None = None) -> str:
    """A token binding ``value`` to ``purpose`` (so a CSRF token is never a session token)."""
    if now is None:
        key = (value, secret, purpose)
        token = _signed.get(key)
        if token is None:
            token = sign(value, secret, purpose=purpose, now=time.time())
            _signed.put(key, token)
        return token
    issued = str(int(now))
    return f"{value}.{issued}.{_mac(secret, f'{purpose}|{value}|{issued}')}"


def unsign(token: str, secret: str, *, purpose: str, max_age: float) -> str | None:
    """The signed value, or None when the token is malformed, forged or expired."""
    key = (token, secret, purpose)
    checked = _checked.get(key)
    if checked is None:
        try:
            value, issued, mac = token.rsplit(".", 2)
            checked = (value, int(issued))
        except (ValueError, AttributeError):
            return None
        if not hmac.compare_digest(mac, _mac(secret, f"{purpose}|{value}|{issued}")):
            return None
        _checked.put(key, checked)
    value, issued_at = checked
    age = time.time() - issued_at
    if age > max_age or age < -60:
        return None
    return value


class SessionClaims(NamedTuple):
    """What a session token signed: whose it is, and the generation it belongs to."""

    user_id: int
    generation: int


def session_token(user_id: int, secret: str, generation: int = 0) -> str:
    """A session of ``user_id`` in session generation ``generation`` (0: never logged out)."""
    return sign(f"{user_id}.{generation}", secret, purpose="session")


def session_claims(token: str | None, secret: str, max_age: float) -> SessionClaims | None:
    """The signed claims of a well-formed, authentic, unexpired session token, else None. The
    generation is NOT checked here: only the store knows the current one."""
    if not token:
        return None
    value = unsign(token, secret, purpose="session", max_age=max_age)
    if value is None:
        return None
    user, _, generation = value.partition(".")
    if not (_number(user, 10) and _number(generation, 18)):
        return None
    user_id = int(user)
    return SessionClaims(user_id, int(generation)) if user_id > 0 else None


def _number(text: str, digits: int) -> bool:
    return 0 < len(text) <= digits and text.isascii() and text.isdigit()


def session_user(token: str | None, secret: str, max_age: float) -> int | None:
    """The user an authentic session token names, of whatever generation (for a service that
    cannot read generations; the subscription service and the web server also check it)."""
    claims = session_claims(token, secret, max_age)
    return None if claims is None else claims.user_id


def bearer_ok(authorization: str | None, expected: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not authorization or not expected:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), expected.encode())
