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
