"""The recommender's HTTP transport: ``/v1`` routes over :class:`RecommenderBox`, its lifecycle
(cache, model, watcher) and its spec.

``setup_recommender(app)`` adds the box to any app: its own (``create_app``, ``python -m
recommender serve``) or the monolith's web server, which then calls ``app[RECOMMENDER]`` in-process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from recommender.batch_api import setup_batch_api
from recommender.box import MAX_BATCH_IDS, RecommenderBox
from recommender.cache import LocalCache, open_cache
from recommender.experiments import setup_experiments
from recommender.models_api import setup_models_api
from recommender.openapi import recommender_paths
from recommender.redisconn import Namespace, describe
from recommender.reload import ModelWatcher
from recommender.schemas import MAX_K, RecommendRequest
from services.feedback.schemas import ARMS, Arm
from services.platform.app import (
    SETTINGS,
    add_openapi_paths,
    add_ready_check,
    add_route,
    answer_before_routing,
    create_base_app,
)
from services.platform.auth import bearer_ok
from services.platform.errors import ApiError, BadRequest, Forbidden, Unauthorized
from services.platform.jsonutil import json_response, raw_json_response, read_body
from services.platform.middleware import METRICS, Handler
from services.platform.params import path_id, query_ids, query_int
from services.platform.runner import run_service
from services.platform.settings import Settings, settings_or_exit

log = logging.getLogger("marquee.recommender")

RECOMMENDER = web.AppKey("recommender", RecommenderBox)
WATCHER = web.AppKey("recommender_watcher", ModelWatcher)


def _k(request: web.Request) -> int:
    return query_int(request, "k", 10, minimum=1, maximum=MAX_K)


def _arm(request: web.Request) -> Arm | None:
    value = request.query.get("arm")
    if value is None:
        return None
    for arm in ARMS:
        if value == arm:
            return arm
    raise BadRequest(f"arm must be one of {', '.join(ARMS)}, got {value!r}", code="invalid_arm")


SIMILAR = "/v1/similar/{movie_id}"
MAX_ALIAS = 64  # longer request targets are answered, not remembered (our clients' are shorter)


def similar_route(box: RecommenderBox, by_target: bool) -> Handler:
    """``GET /v1/similar/{movie_id}``, the hot path. ``by_target``: the app answers a request
    target (``/v1/similar/1?k=10``) the served version has answered before ahead of routing
    (``answer_before_routing``), so the box remembers each answer by its target too.
    ``?arm=control|candidate``: the running experiment's version for that arm answers (never
    remembered by target: which version answers an arm changes with the experiment)."""

    async def similar(request: web.Request) -> web.Response:
        movie_id, k = path_id(request, "movie_id"), _k(request)
        if "arm=" in request.rel_url.raw_query_string:
            return raw_json_response(await box.similar_json(movie_id, k, _arm(request)))
        target = request.raw_path
        alias = target if by_target and len(target) <= MAX_ALIAS else None
        return raw_json_response(await box.similar_json(movie_id, k, alias=alias))

    return similar


async def similar_batch(request: web.Request) -> web.Response:
    box = request.app[RECOMMENDER]
    ids = query_ids(request, "ids", maximum=MAX_BATCH_IDS)
    return raw_json_response(await box.similar_many_json(ids, _k(request)))


async def user_recommendations(request: web.Request) -> web.Response:
    box = request.app[RECOMMENDER]
    user_id = path_id(request, "user_id")
    return raw_json_response(await box.user_recommendations_json(user_id, _k(request)))


async def recommendations(request: web.Request) -> web.Response:
    box = request.app[RECOMMENDER]
    body = await read_body(request, RecommendRequest, '{"history": [1, 2571], "k": 10}', CODES)
    return raw_json_response(await box.recommend_json(body.history, body.k))


# A bad ``history`` or ``k`` answers with the code a bad id or ``k`` gets everywhere else.
CODES = {"": "invalid_json", "history": "invalid_history", "k": "invalid_param"}


async def model_info(request: web.Request) -> web.Response:
    return json_response(request.app[RECOMMENDER].model_info())


def require_admin(request: web.Request) -> None:
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("admin token required: Authorization: Bearer <token>")
    if not bearer_ok(header, request.app[SETTINGS].admin_token):
        raise Forbidden("wrong admin token")


async def reload_model(request: web.Request) -> web.Response:
    require_admin(request)
    return json_response(await request.app[RECOMMENDER].reload())


async def rollback_model(request: web.Request) -> web.Response:
    require_admin(request)
    return json_response(await request.app[RECOMMENDER].rollback())


async def recommender_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the cache, load the published model (if any), watch for new ones; close on exit."""
    settings = app[SETTINGS]
    box = app[RECOMMENDER]
    box.cache = await open_cache(settings, app[METRICS])
    try:
        await box.reload()
    except ApiError as exc:
        log.warning(
            "model: not loaded yet; not ready until one is published",
            extra={"reason": exc.message, "model_dir": str(settings.model_dir)},
        )
    watcher = app[WATCHER]
    # Notices travel over the state Redis; when that is the cache's and the cache found none
    # ("auto" without a local Redis), registry checks alone.
    follows_missing_cache = settings.state_redis_url is None and isinstance(box.cache, LocalCache)
    watcher.redis_url = None if follows_missing_cache else settings.state_redis_candidates()
    log.info(
        f"redis namespace: {settings.redis_namespace}",
        extra={
            "cache": box.cache.describe(),
            "state": describe(watcher.redis_url),
            "channel": watcher.channel,
        },
    )
    watcher.start()
    try:
        yield
    finally:
        await watcher.stop()
        await box.cache.close()


def setup_recommender(app: web.Application) -> None:
    settings = app[SETTINGS]
    box = RecommenderBox(settings, app[METRICS])
    app[RECOMMENDER] = box
    app[WATCHER] = ModelWatcher(
        box,
        None,
        settings.model_poll_interval,
        Namespace.of(settings),
        verify_interval=settings.model_verify_interval,
    )
    setup_experiments(app, box)  # before recommender_ctx: the box starts with the store
    app.cleanup_ctx.append(recommender_ctx)
    add_ready_check(app, "model", lambda: box.ready)
    by_target = answer_before_routing(app, SIMILAR, box.memoised_alias)
    add_route(app, "GET", SIMILAR, similar_route(box, by_target))
    add_route(app, "GET", "/v1/similar", similar_batch)
    add_route(app, "GET", "/v1/users/{user_id}/recommendations", user_recommendations)
    add_route(app, "POST", "/v1/recommendations", recommendations)
    add_route(app, "GET", "/v1/model", model_info)
    add_route(app, "POST", "/v1/model/reload", reload_model)
    add_route(app, "POST", "/v1/model/rollback", rollback_model)
    add_openapi_paths(app, recommender_paths())
    setup_models_api(app, box.registry)
    setup_batch_api(app)


def create_app(settings: Settings) -> web.Application:
    app = create_base_app(settings, "recommender")
    setup_recommender(app)
    return app


def main() -> None:
    settings = settings_or_exit()
    run_service(create_app, settings, "recommender", settings.recommender_port)
