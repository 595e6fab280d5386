"""Small builders for OpenAPI path items, so each service's spec reads as a table of its routes,
and the document itself, whose schemas are generated from the payload Structs.

An operation names the Struct it answers with (``returns``) and the one it reads (``body``);
``document`` turns every Struct named anywhere into a schema under ``components`` (with
``msgspec.json.schema_components``) and points each use at it. So a payload is declared once,
as the class every handler and client uses, and the spec cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from services.platform.params import MAX_ID  # ids above it are 400: the spec says so too
from services.platform.schemas import ErrorEnvelope, Health, Readiness

REF = "#/components/schemas/{name}"
# Operations marked ``security=True`` name this scheme: the service or admin bearer token.
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer"}}


@dataclass(frozen=True)
class Payload:
    """Where a Struct's schema goes in an operation (replaced by a reference in ``document``)."""

    type: type


def error_responses(*statuses: int) -> dict:
    schema = Payload(ErrorEnvelope)
    return {
        str(s): {"description": "error", "content": {"application/json": {"schema": schema}}}
        for s in statuses
    }


def operation(
    summary: str,
    *,
    returns: type | None = None,
    parameters: list[dict] | None = None,
    body: type | dict | None = None,
    errors: tuple[int, ...] = (400,),
    ok: int = 200,
    content_type: str = "application/json",
    security: bool = False,
) -> dict:
    """An operation answering ``ok`` with ``returns`` (a Struct; HTML and redirects name
    none) and the ``errors`` statuses with the error envelope."""
    schema: object = Payload(returns) if returns is not None else {}
    op: dict = {
        "summary": summary,
        "responses": {
            str(ok): {"description": "ok", "content": {content_type: {"schema": schema}}},
            **error_responses(*errors),
        },
    }
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        body_schema = Payload(body) if isinstance(body, type) else body
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema}},
        }
    if security:
        op["security"] = [{"bearer": []}]
    return op


def form_post(summary: str, errors: tuple[int, ...]) -> dict:
    """An HTML form's POST: a url-encoded body, answered with a 303 redirect (or an error page)."""
    op = operation(summary, ok=303, errors=errors, content_type="text/html")
    op["requestBody"] = {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
    }
    return op


def document(title: str, paths: dict) -> dict:
    """The OpenAPI 3.1 document of ``paths``, every Struct they name in ``components``."""
    types = sorted({p.type for p in _payloads(paths)}, key=lambda t: t.__name__)
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    by_type = dict(zip(types, refs, strict=True))
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": _resolved(paths, by_type),
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


def _payloads(node: object) -> Iterator[Payload]:
    if isinstance(node, Payload):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _payloads(value)
    elif isinstance(node, list):
        for value in node:
            yield from _payloads(value)


def _resolved(node: Any, refs: dict[type, dict]) -> Any:  # noqa: ANN401 - any JSON value
    if isinstance(node, Payload):
        return refs[node.type]
    if isinstance(node, dict):
        return {k: _resolved(v, refs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolved(v, refs) for v in node]
    return node


def path_param(name: str, description: str = "") -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    }


def query_param(name: str, schema: dict, description: str = "", required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _readiness() -> dict:
    """Ready (200) or not (503), with the same body: which checks pass."""
    op = operation("readiness: data/model loaded, stores open", returns=Readiness, errors=())
    op["responses"]["503"] = {
        "description": "not ready",
        "content": {"application/json": {"schema": Payload(Readiness)}},
    }
    return op


def system_paths() -> dict:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/healthz": {"get": operation("liveness", returns=Health, errors=())},
        "/readyz": {"get": _readiness()},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "ok", "content": text}},
            }
        },
        "/openapi.json": {"get": operation("this document", errors=())},
    }
