"""The accounts' HTTP routes on the subscription service: register, log in, log out, and the
session check the web server caches. The rules are ``accounts.Accounts``'; this module parses,
says who is calling, and documents the routes.

The client address the log-in limits key on is the connection's, except from a caller holding
the service token (the web server), whose ``client`` field names the visitor it relays for.
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web

from services.platform.app import SETTINGS, add_openapi_paths, add_route
from services.platform.auth import SESSION_HEADER, bearer_ok
from services.platform.errors import Forbidden, PayloadTooLarge, Unauthorized
from services.platform.jsonutil import json_response, read_body
from services.platform.openapi import operation, path_param
from services.platform.params import path_id
from services.subscription.accounts import MAX_PASSWORD, MIN_PASSWORD, Accounts
from services.subscription.schemas import (
    Credentials,
    DemoLogin,
    SessionEnded,
    SessionGrant,
    SessionState,
)

T = TypeVar("T")
ACCOUNTS = web.AppKey("accounts", Accounts)
_CREDENTIALS_EXAMPLE = '{"name": "ada", "password": "correct horse battery"}'


def _client(request: web.Request, stated: str | None) -> str | None:
    """The visitor's address: as the web server states it (service token), else the peer's."""
    settings = request.app[SETTINGS]
    if stated and bearer_ok(request.headers.get("Authorization"), settings.service_token):
        return stated
    return request.remote


async def _body(request: web.Request, into: type[T], example: str) -> T:
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return await read_body(request, into, example)


async def register(request: web.Request) -> web.Response:
    body = await _body(request, Credentials, _CREDENTIALS_EXAMPLE)
    grant = await request.app[ACCOUNTS].register(
        body.name, body.password, _client(request, body.client)
    )
    return json_response(grant, status=201)


async def log_in(request: web.Request) -> web.Response:
    body = await _body(request, Credentials, _CREDENTIALS_EXAMPLE)
    grant = await request.app[ACCOUNTS].log_in(
        body.name, body.password, _client(request, body.client)
    )
    return json_response(grant, status=201)


async def demo_log_in(request: web.Request) -> web.Response:
    body = await _body(request, DemoLogin, '{"user_id": 1}')
    return json_response(await request.app[ACCOUNTS].demo_log_in(body.user_id), status=201)


async def log_out(request: web.Request) -> web.Response:
    return json_response(await request.app[ACCOUNTS].log_out(request.headers.get(SESSION_HEADER)))


async def session_state(request: web.Request) -> web.Response:
    """The user's session generation: for the service token, or for a session of that user of
    any generation (a revoked token may learn that it is revoked)."""
    user_id = path_id(request, "user_id")
    settings = request.app[SETTINGS]
    accounts = request.app[ACCOUNTS]
    if not bearer_ok(request.headers.get("Authorization"), settings.service_token):
        claims = accounts.claims(request.headers.get(SESSION_HEADER))
        if claims is None:
            raise Unauthorized(f"send {SESSION_HEADER} (the user's session) or a service token")
        if claims.user_id != user_id:
            raise Forbidden("this session belongs to another user")
    return json_response(await accounts.session_state(user_id))


_SESSION = {
    "name": SESSION_HEADER,
    "in": "header",
    "required": False,
    "description": "the user's signed session",
    "schema": {"type": "string"},
}

OPENAPI_PATHS = {
    "/v1/accounts": {
        "post": operation(
            "register an account (name: 3-32 of A-Z a-z 0-9 _ . -; password: "
            f"{MIN_PASSWORD}-{MAX_PASSWORD} characters) and log it in: a session token",
            returns=SessionGrant,
            body=Credentials,
            ok=201,
            errors=(400, 409, 413, 429, 503),
        )
    },
    "/v1/sessions": {
        "post": operation(
            "log in with name + password: a session token (429 + Retry-After past the limits)",
            returns=SessionGrant,
            body=Credentials,
            ok=201,
            errors=(400, 401, 413, 429, 503),
        )
    },
    "/v1/sessions/demo": {
        "post": operation(
            "development only: a session for a MovieLens user id alone (403 otherwise)",
            returns=SessionGrant,
            body=DemoLogin,
            ok=201,
            errors=(400, 403, 413, 503),
        )
    },
    "/v1/sessions/current": {
        "delete": operation(
            "log out: end every session of the token's user",
            returns=SessionEnded,
            parameters=[_SESSION],
            errors=(401, 503),
        )
    },
    "/v1/users/{user_id}/session": {
        "get": operation(
            "the user's current session generation and account name",
            returns=SessionState,
            parameters=[path_param("user_id", "the user"), _SESSION],
            errors=(400, 401, 403, 503),
            security=True,
        )
    },
}


def setup_accounts(app: web.Application) -> None:
    """The routes; ``ACCOUNTS`` is filled by the subscription service's cleanup_ctx."""
    add_route(app, "POST", "/v1/accounts", register)
    add_route(app, "POST", "/v1/sessions", log_in)
    add_route(app, "POST", "/v1/sessions/demo", demo_log_in)
    add_route(app, "DELETE", "/v1/sessions/current", log_out)
    add_route(app, "GET", "/v1/users/{user_id}/session", session_state)
    add_openapi_paths(app, OPENAPI_PATHS)
