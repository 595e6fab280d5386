"""Query and path parameter parsing that answers bad input with a clear 400."""

from __future__ import annotations

from aiohttp import web

from services.platform.errors import BadRequest

MAX_ID = 2**31 - 1


def parse_id(raw: str | None, name: str) -> int:
    try:
        value = int(raw) if raw is not None and raw.strip().isdigit() else None
    except ValueError:
        value = None
    if value is None or not 0 < value <= MAX_ID:
        raise BadRequest(f"{name} must be a positive integer, got {raw!r}", code="invalid_id")
    return value


def path_id(request: web.Request, name: str) -> int:
    return parse_id(request.match_info.get(name), name)


def query_int(
    request: web.Request, name: str, default: int, *, minimum: int = 0, maximum: int = 1000
) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}", code="invalid_param") from None
    if not minimum <= value <= maximum:
        raise BadRequest(
            f"{name} must be between {minimum} and {maximum}, got {value}", code="invalid_param"
        )
    return value


def query_ids(request: web.Request, name: str = "ids", *, maximum: int = 100) -> list[int]:
    raw = request.query.get(name, "")
    parts = [p for p in raw.split(",") if p.strip()]
    if not parts:
        raise BadRequest(
            f"{name} must list at least one id, e.g. {name}=1,2,3", code="invalid_param"
        )
    if len(parts) > maximum:
        raise BadRequest(f"{name} lists {len(parts)} ids; at most {maximum}", code="invalid_param")
    return [parse_id(p.strip(), name) for p in parts]
