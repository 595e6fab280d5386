"""Helpers for the observability tests: reading Prometheus text, JSON log lines, and the routes an
app really serves."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from services.platform.middleware import UNMATCHED


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus exposition as (name, labels, value)."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(
        v
        for n, ls, v in samples(text)
        if n == name and all(ls.get(k) == w for k, w in labels.items())
    )


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


async def scrape(session: aiohttp.ClientSession, base: str) -> str:
    async with session.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        return await resp.text()


def json_lines(path: Path) -> list[dict]:
    """The JSON objects among a process's output lines (anything else is skipped)."""
    entries = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                entries.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return entries


def access_lines(path: Path, request_id: str) -> list[dict]:
    """The access-log entries ("request") of one request id in a process's log."""
    return [
        e
        for e in json_lines(path)
        if e.get("request_id") == request_id and e.get("msg") == "request"
    ]


def routed(app: web.Application) -> dict[str, set[str]]:
    """path -> methods the router serves, leaving out HEAD (aiohttp adds one per GET) and static
    files (not an API)."""
    out: dict[str, set[str]] = {}
    for route in app.router.routes():
        resource = route.resource
        if (
            resource is None
            or route.method == "HEAD"
            or route.name == UNMATCHED
            or isinstance(resource, web.StaticResource)
        ):
            continue
        out.setdefault(resource.canonical, set()).add(route.method.lower())
    return out
