"""The subscription service's HTTP transport: who may call (auth), request parsing, the spec.

Authorization lives here, not in ``Subscriptions``: over HTTP a caller proves it is the user
(the web server's signed session in ``X-Marquee-Session``, of the user's current session
generation: a logged-out token is refused) or a trusted service (the service token); in the
monolith the web server checks the session itself and calls the class directly. The accounts'
routes (register, log in, log out) are in ``accounts_api``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.platform.app import (
    SETTINGS,
    add_openapi_paths,
    add_ready_check,
    add_route,
    create_base_app,
)
from services.platform.auth import SESSION_HEADER, bearer_ok
from services.platform.errors import Forbidden, PayloadTooLarge, Unauthorized
from services.platform.jsonutil import json_response, read_body
from services.platform.openapi import operation, path_param
from services.platform.params import path_id
from services.platform.runner import run_service
from services.platform.settings import Settings, settings_or_exit
from services.subscription.accounts import Accounts
from services.subscription.accounts_api import ACCOUNTS, setup_accounts
from services.subscription.schemas import PlanChoice, Plans, Subscription
from services.subscription.subscriptions import Subscriptions

SUBSCRIPTIONS = web.AppKey("subscriptions", Subscriptions)
IDEMPOTENCY_KEY = "Idempotency-Key"


async def subscriptions_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the store (PostgreSQL at settings.database_url, else the SQLite file
    settings.subscription_db), migrating it if needed, and the accounts over the same store;
    close them on shutdown."""
    app[SUBSCRIPTIONS] = await Subscriptions.open(app[SETTINGS])
    app[ACCOUNTS] = Accounts(app[SUBSCRIPTIONS].store, app[SETTINGS])
    try:
        yield
    finally:
        app[ACCOUNTS].close()
        await app[SUBSCRIPTIONS].close()


async def authorize(request: web.Request, user_id: int) -> None:
    """Allow the service token, or a live session of ``user_id`` itself (signed, unexpired, not
    logged out since: its generation is the user's current one); 401/403 otherwise."""
    settings = request.app[SETTINGS]
    authorization = request.headers.get("Authorization")
    if bearer_ok(authorization, settings.service_token):
        return
    session = request.headers.get(SESSION_HEADER)
    accounts = request.app[ACCOUNTS]
    claims = accounts.claims(session)
    if claims is None:
        if authorization or session:
            raise Unauthorized("invalid or expired credentials")
        raise Unauthorized(f"send {SESSION_HEADER} (the user's session) or a service bearer token")
    if claims.user_id != user_id:
        raise Forbidden("this session belongs to another user")
    if not await accounts.is_current(claims):
        raise Unauthorized(
            "this session has ended (logged out); log in again", code="session_ended"
        )


async def _user(request: web.Request) -> int:
    user_id = path_id(request, "user_id")
    await authorize(request, user_id)
    return user_id


async def _plan_from_body(request: web.Request) -> str:
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return (await read_body(request, PlanChoice, '{"plan": "standard"}')).plan


async def list_plans(request: web.Request) -> web.Response:
    return json_response(Plans(request.app[SUBSCRIPTIONS].plans()))


async def get_subscription(request: web.Request) -> web.Response:
    user_id = await _user(request)
    return json_response(await request.app[SUBSCRIPTIONS].get(user_id))


async def put_subscription(request: web.Request) -> web.Response:
    user_id = await _user(request)
    key = request.headers.get(IDEMPOTENCY_KEY)
    plan = await _plan_from_body(request)
    return json_response(await request.app[SUBSCRIPTIONS].put(user_id, plan, key))


async def delete_subscription(request: web.Request) -> web.Response:
    user_id = await _user(request)
    key = request.headers.get(IDEMPOTENCY_KEY)
    return json_response(await request.app[SUBSCRIPTIONS].cancel(user_id, key))


_USER = path_param("user_id", "the user whose subscription it is")
_KEY = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": True,
    "description": "unique per write; a retry with the same key is answered, not applied, again",
    "schema": {"type": "string", "pattern": "^[ -~]{1,200}$"},
}
_SESSION = {
    "name": SESSION_HEADER,
    "in": "header",
    "required": False,
    "description": "the user's signed session (alternative to the service bearer token)",
    "schema": {"type": "string"},
}
_AUTH_ERRORS = (400, 401, 403)

OPENAPI_PATHS = {
    "/v1/plans": {"get": operation("the plans on offer", returns=Plans, errors=())},
    "/v1/users/{user_id}/subscription": {
        "get": operation(
            "the user's subscription",
            returns=Subscription,
            parameters=[_USER, _SESSION],
            errors=(*_AUTH_ERRORS, 503),
            security=True,
        ),
        "put": operation(
            "subscribe or change plan (idempotent with Idempotency-Key)",
            returns=Subscription,
            parameters=[_USER, _KEY, _SESSION],
            body=PlanChoice,
            errors=(*_AUTH_ERRORS, 409, 413, 503),
            security=True,
        ),
        "delete": operation(
            "cancel the subscription (idempotent with Idempotency-Key)",
            returns=Subscription,
            parameters=[_USER, _KEY, _SESSION],
            errors=(*_AUTH_ERRORS, 409, 503),
            security=True,
        ),
    },
}


def setup_subscription(app: web.Application) -> None:
    app.cleanup_ctx.append(subscriptions_ctx)
    add_ready_check(
        app, "subscription", lambda: SUBSCRIPTIONS in app and app[SUBSCRIPTIONS].is_open
    )
    add_route(app, "GET", "/v1/plans", list_plans)
    add_route(app, "GET", "/v1/users/{user_id}/subscription", get_subscription)
    add_route(app, "PUT", "/v1/users/{user_id}/subscription", put_subscription)
    add_route(app, "DELETE", "/v1/users/{user_id}/subscription", delete_subscription)
    add_openapi_paths(app, OPENAPI_PATHS)
    setup_accounts(app)


def create_app(settings: Settings) -> web.Application:
    app = create_base_app(settings, "subscription")
    setup_subscription(app)
    return app


def main() -> None:
    settings = settings_or_exit()
    run_service(create_app, settings, "subscription", settings.subscription_port)


def migrate_main() -> None:
    """Bring the configured store's schema up to date; print what was applied."""
    import asyncio

    from services.subscription.store import open_store

    async def run() -> None:
        settings = settings_or_exit()
        store = await open_store(settings)  # opening migrates (under an advisory lock)
        await store.close()
        where = "PostgreSQL" if settings.database_url else f"SQLite {settings.subscription_db}"
        print(f"subscription store up to date ({where})")

    asyncio.run(run())
