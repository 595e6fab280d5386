"""``GET /v1/models``: the registry's versions over HTTP (the dashboard's "published" table).

The registry is a directory on the recommender's disk; in the microservices deployment the web
server cannot read it, so the recommender lists it. One unreadable manifest is named in
``unreadable`` instead of failing the whole list: an operator looking at a damaged registry
needs the list most.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from recommender.registry import IntegrityError, ModelRegistry, RegistryError
from recommender.schemas import Manifest, ModelList
from services.platform.app import add_openapi_paths, add_route
from services.platform.jsonutil import json_response
from services.platform.openapi import operation


def model_list(registry: ModelRegistry) -> ModelList:
    """Every version's manifest, oldest first (blocking: a few small files per version)."""
    items: list[Manifest] = []
    unreadable: list[str] = []
    if registry.versions_dir.is_dir():
        for entry in sorted(registry.versions_dir.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                items.append(registry.manifest(entry.name))
            except (IntegrityError, RegistryError, OSError):
                unreadable.append(entry.name)
    try:
        published = registry.history()
    except (RegistryError, ValueError, OSError):
        published = []
    return ModelList(registry.current_version(), published, items, unreadable)


async def read_model_list(registry: ModelRegistry) -> ModelList:
    """``model_list`` off the event loop (disk reads)."""
    return await asyncio.to_thread(model_list, registry)


def setup_models_api(app: web.Application, registry: ModelRegistry) -> None:
    async def models(request: web.Request) -> web.Response:
        return json_response(await read_model_list(registry))

    add_route(app, "GET", "/v1/models", models)
    add_openapi_paths(
        app,
        {
            "/v1/models": {
                "get": operation(
                    "every model version in the registry with its offline metrics, oldest "
                    "first, and which one is published",
                    returns=ModelList,
                    errors=(),
                )
            }
        },
    )
