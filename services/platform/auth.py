"""Signed tokens (sessions, CSRF) and constant-time token checks.

A session token is ``<user_id>.<issued>.<mac>`` with an HMAC-SHA256 over the first two parts. The
web server sets it as a cookie; it passes it on to the subscription service in ``X-Marquee-Session``
so that service can check for itself that the writer is the user whose plan changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

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


def session_token(user_id: int, secret: str) -> str:
    return sign(str(user_id), secret, purpose="session")


def session_user(token: str | None, secret: str, max_age: float) -> int | None:
    if not token:
        return None
    value = unsign(token, secret, purpose="session", max_age=max_age)
    return int(value) if value and value.isdigit() else None


def bearer_ok(authorization: str | None, expected: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not authorization or not expected:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), expected.encode())
