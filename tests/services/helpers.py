"""Helpers the catalog and subscription tests share: credentials and route listings."""

from __future__ import annotations

import sqlite3

import asyncpg
from aiohttp import web

from services.platform.auth import session_token
from services.platform.middleware import UNMATCHED
from services.platform.settings import Settings

SECRET = "test-secret-key-of-the-suite"
SERVICE_TOKEN = "test-service-token"
# The subscription tables a test empties before it starts (plans and migrations stay).
SUBSCRIPTION_TABLES = (
    "subscriptions",
    "idempotency_keys",
    "subscription_events",
    "accounts",
    "session_generations",
)


def service_headers(key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def session_headers(user_id: int, key: str | None = None) -> dict[str, str]:
    headers = {"X-Marquee-Session": session_token(user_id, SECRET)}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def router_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route an app serves, HEAD aside (aiohttp adds it to each GET)."""
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None and route.name != UNMATCHED
    }


async def query(settings: Settings, sql: str) -> list[tuple]:
    """Rows of ``sql`` (plain SQL both dialects read alike) from the store ``settings`` use."""
    if settings.database_url:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    db = sqlite3.connect(settings.subscription_db)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()
