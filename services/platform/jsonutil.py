"""JSON in and out: msgspec encodes the payload Structs (and plain data) in C; request bodies are
decoded straight into their Struct, so a wrong shape is a 400 that names the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from services.platform.errors import BadRequest

T = TypeVar("T")


def _numpy(obj: object) -> object:
    """numpy scalars and arrays (model outputs) as plain numbers and lists."""
    if type(obj).__module__ == "numpy":
        return obj.tolist()  # type: ignore[attr-defined]
    raise NotImplementedError(f"cannot encode {type(obj).__name__} as JSON")


_encoder = msgspec.json.Encoder(enc_hook=_numpy)


def dumps(data: object) -> bytes:
    return _encoder.encode(data)


def json_response(data: object, *, status: int = 200, headers: dict | None = None) -> web.Response:
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


_FIELD = re.compile(r"at `\$\.(\w+)|field `(\w+)`")


async def read_body(
    request: web.Request,
    into: type[T],
    example: str,
    codes: Mapping[str, str] | None = None,
) -> T:
    """The request's JSON body as ``into`` (types and limits checked by its Struct), or a 400
    saying what is wrong: its code is ``codes[field]`` for the field at fault, ``codes[""]``
    when the body is not an object of that shape at all, "invalid_body" otherwise."""
    body = await request.read()
    if not body:
        raise BadRequest(
            f"request body is empty; expected JSON like {example}", code="invalid_json"
        )
    try:
        return msgspec.json.decode(body, type=into)
    except msgspec.ValidationError as exc:
        found = _FIELD.search(str(exc))
        field = (found.group(1) or found.group(2)) if found else None
        code = (codes or {}).get(field or "", "invalid_body")
        raise BadRequest(f"{exc}; expected JSON like {example}", code=code) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None


async def read_form(request: web.Request) -> MultiDictProxy:
    """The request's form fields, or a 400 when the body cannot be parsed as a form (a multipart
    body without its boundary, malformed part headers, an unknown charset): bad input, not a 500.
    A body over the size limit still raises aiohttp's 413."""
    try:
        return await request.post()
    except (ValueError, LookupError, HttpProcessingError):
        raise BadRequest("the form body could not be read", code="invalid_form") from None
