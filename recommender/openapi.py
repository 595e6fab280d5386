"""The recommender's OpenAPI paths: one table of its routes, merged into /openapi.json."""

from __future__ import annotations

from recommender.box import MAX_BATCH_IDS
from recommender.schemas import (
    MAX_K,
    ModelChange,
    ModelInfo,
    Recommendations,
    RecommendRequest,
    Similar,
    SimilarBatch,
    UserRecommendations,
)
from services.feedback.schemas import ARMS, ExperimentReport
from services.platform.openapi import operation, path_param, query_param

_K = query_param(
    "k", {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}, "results wanted"
)


def recommender_paths() -> dict:
    """Every /v1 route of the recommender box."""
    return {
        "/v1/similar/{movie_id}": {
            "get": operation(
                "movies most similar to one movie (source: collaborative, blend or content; cache)",
                returns=Similar,
                parameters=[
                    path_param("movie_id", "MovieLens id"),
                    _K,
                    query_param(
                        "arm",
                        {"type": "string", "enum": list(ARMS)},
                        "the viewer's experiment arm: that arm's model version answers "
                        "(model_version says which); none, or no experiment: the published one",
                    ),
                ],
                errors=(400, 404, 503),
            )
        },
        "/v1/similar": {
            "get": operation(
                "similar movies for several movies; unknown ids are listed in missing",
                returns=SimilarBatch,
                parameters=[
                    query_param(
                        "ids",
                        # ids are 1 to 2**31 - 1: no zero, at most 10 digits each
                        {"type": "string", "pattern": r"^[1-9][0-9]{0,9}(,[1-9][0-9]{0,9}){0,99}$"},
                        f"comma-separated movie ids, at most {MAX_BATCH_IDS}",
                        required=True,
                    ),
                    _K,
                ],
                errors=(400, 503),
            )
        },
        "/v1/users/{user_id}/recommendations": {
            "get": operation(
                "recommendations for a user seen in training",
                returns=UserRecommendations,
                parameters=[path_param("user_id", "MovieLens user id"), _K],
                errors=(400, 404, 503),
            )
        },
        "/v1/recommendations": {
            "post": operation(
                (
                    "recommendations from a viewing history; unknown ids are listed in ignored "
                    "and popular movies come back (source: fallback) when none is known"
                ),
                returns=Recommendations,
                body=RecommendRequest,
                errors=(400, 413, 503),
            )
        },
        "/v1/model": {
            "get": operation(
                "the manifest of the model being served", returns=ModelInfo, errors=(503,)
            )
        },
        "/v1/model/reload": {
            "post": operation(
                "load the registry's current version if it is not the one served (admin)",
                returns=ModelChange,
                errors=(401, 403, 409),
                security=True,
            )
        },
        "/v1/experiments/current": {
            "get": operation(
                "the current (or last) A/B experiment: per arm impressions, clicks, CTR with "
                "its 95 % Wilson interval and per-minute series; the difference with its "
                "Newcombe interval (admin; 404 no_experiment when none was started)",
                returns=ExperimentReport,
                errors=(401, 403, 404, 503),
                security=True,
            )
        },
        "/v1/model/rollback": {
            "post": operation(
                "make the previous version current in the registry and serve it (admin)",
                returns=ModelChange,
                errors=(401, 403, 409),
                security=True,
            )
        },
    }
