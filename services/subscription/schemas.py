"""The subscription service's payloads (see ``services.platform.schemas``)."""

from __future__ import annotations

import msgspec


class Plan(msgspec.Struct, frozen=True, gc=False):
    id: str
    name: str
    price_cents: int
    currency: str
    features: tuple[str, ...]


class Plans(msgspec.Struct, gc=False):
    items: list[Plan]


class Subscription(msgspec.Struct, frozen=True, gc=False):
    """A user's plan. ``status``: none | active; the web server also shows ``anonymous``
    (nobody logged in) and ``unavailable`` (the service could not be asked)."""

    user_id: int | None
    status: str
    plan: Plan | None
    updated_at: str | None


class PlanChoice(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PUT /v1/users/{id}/subscription``."""

    plan: str


# ---- accounts and sessions (services.subscription.accounts) ------------------------------------
class Credentials(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/accounts`` (register) and ``POST /v1/sessions`` (log in).
    ``client``: the visitor's address as the web server saw it, believed only from a caller
    holding the service token (the log-in limits are kept per address)."""

    name: str
    password: str
    client: str | None = None


class DemoLogin(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/sessions/demo`` (development only): a MovieLens user id."""

    user_id: int
    client: str | None = None


class SessionGrant(msgspec.Struct, frozen=True, gc=False):
    """A new session: ``token`` goes in the cookie (and in ``X-Marquee-Session``) for
    ``max_age`` seconds, or until the user logs out. ``name`` is None for a demo user."""

    user_id: int
    name: str | None
    generation: int
    token: str
    max_age: int


class SessionState(msgspec.Struct, frozen=True, gc=False):
    """``GET /v1/users/{id}/session``: the user's current session generation (a token of an
    earlier one is revoked) and the account's name (None: no account, a demo user)."""

    user_id: int
    generation: int
    name: str | None


class SessionEnded(msgspec.Struct, frozen=True, gc=False):
    """``DELETE /v1/sessions/current``: every session of the user made before ``generation``
    is dead."""

    user_id: int
    generation: int
