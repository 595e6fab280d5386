"""Small builders for OpenAPI path items, so each service's spec reads as a table of its routes."""

from __future__ import annotations

from services.platform.params import MAX_ID  # ids above it are 400: the spec says so too

ERROR_REF = {"$ref": "#/components/schemas/Error"}


def error_responses(*statuses: int) -> dict:
    return {
        str(s): {"description": "error", "content": {"application/json": {"schema": ERROR_REF}}}
        for s in statuses
    }


def operation(
    summary: str,
    *,
    parameters: list[dict] | None = None,
    body: dict | None = None,
    errors: tuple[int, ...] = (400,),
    ok: int = 200,
    content_type: str = "application/json",
    security: bool = False,
) -> dict:
    op: dict = {
        "summary": summary,
        "responses": {
            str(ok): {"description": "ok", "content": {content_type: {"schema": {}}}},
            **error_responses(*errors),
        },
    }
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if security:
        op["security"] = [{"bearer": []}]
    return op


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


def system_paths() -> dict:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/healthz": {"get": operation("liveness", errors=())},
        "/readyz": {"get": operation("readiness: data/model loaded, stores open", errors=(503,))},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "ok", "content": text}},
            }
        },
        "/openapi.json": {"get": operation("this document", errors=())},
    }
