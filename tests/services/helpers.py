"""Helpers the catalog and subscription tests share: credentials and route listings."""

from __future__ import annotations

from aiohttp import web

from services.platform.auth import session_token

SECRET = "test-secret"
SERVICE_TOKEN = "test-service-token"


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
        if route.method != "HEAD" and route.resource is not None
    }
