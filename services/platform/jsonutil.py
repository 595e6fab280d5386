"""JSON responses with orjson: faster than the stdlib and handles numpy scalars."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from services.platform.errors import BadRequest

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=OPTIONS)


def json_response(data: Any, *, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(
        body=dumps(data), status=status, content_type="application/json", headers=headers
    )


def raw_json_response(body: bytes, *, status: int = 200) -> web.Response:
    """A response from bytes already serialised (e.g. a cached result)."""
    return web.Response(body=body, status=status, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or a 400 that says what is wrong with it."""
    body = await request.read()
    if not body:
        raise BadRequest("request body is empty; expected JSON", code="invalid_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None


async def read_form(request: web.Request) -> MultiDictProxy:
    """The request's form fields, or a 400 when the body cannot be parsed as a form (a multipart
    body without its boundary, malformed part headers, an unknown charset): bad input, not a 500.
    A body over the size limit still raises aiohttp's 413."""
    try:
        return await request.post()
    except (ValueError, LookupError, HttpProcessingError):
        raise BadRequest("the form body could not be read", code="invalid_form") from None
