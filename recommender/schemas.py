"""The recommender's payloads (see ``services.platform.schemas``), and the manifest a model
version is stored with, which ``/v1/model`` serves."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from services.platform.params import MAX_ID

MAX_K = 100
MAX_HISTORY = 1000

MovieId = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
K = Annotated[int, msgspec.Meta(ge=1, le=MAX_K)]


class ScoredMovie(msgspec.Struct, frozen=True, gc=False):
    movie_id: int
    score: float


class Similar(msgspec.Struct, gc=False):
    """``GET /v1/similar/{id}``. ``source`` says where the list came from: "collaborative"
    (what people rated), "blend" (with the movies' content, for movies few rated), "content"
    (genres, tags, title: for movies nobody rated well), "popularity" (a popularity model
    version: the most rated movies) or "cache" (an answer computed before)."""

    movie_id: int
    model_version: str
    items: list[ScoredMovie]
    source: str


class SimilarBatch(msgspec.Struct, gc=False):
    model_version: str
    results: list[Similar]
    missing: list[int]


class Recommendations(msgspec.Struct, gc=False):
    """``POST /v1/recommendations``: for a history. ``source``: how the list was made
    ("collaborative", "cache", or "fallback": the most popular movies, when nothing in the
    history is known); ``ignored``: the history's ids the model does not know."""

    model_version: str
    items: list[ScoredMovie]
    source: str
    ignored: list[int] = msgspec.field(default_factory=list)


class UserRecommendations(msgspec.Struct, gc=False):
    """``GET /v1/users/{id}/recommendations``: for a user seen in training."""

    user_id: int
    model_version: str
    items: list[ScoredMovie]
    source: str


class RecommendRequest(msgspec.Struct):
    """The body of ``POST /v1/recommendations``: movie ids, oldest first."""

    history: Annotated[list[MovieId], msgspec.Meta(max_length=MAX_HISTORY)]
    k: K = 10


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """A stored model version: what it is (algorithm, params, data), how to check its bytes
    (sha256, HMAC), how it was made and how it scored offline."""

    version: str
    created: str  # ISO 8601, UTC
    sha256: str
    hmac: str | None
    data_hash: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)
    n_items: int = 0
    n_users: int = 0
    trained_seconds: float = 0.0
    size_bytes: int = 0
    algorithm: str = ""  # what scores users: "ease+knn" or "knn" (chosen by catalog size)
    training: dict[str, Any] = msgspec.field(default_factory=dict)  # rows, stages, peak RSS

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        missing = {"version", "created", "sha256", "data_hash"} - set(data)
        if missing:
            raise ValueError(f"manifest is missing {sorted(missing)}")
        return msgspec.convert({"hmac": None, **data}, cls)


class ModelInfo(Manifest, frozen=True, kw_only=True):
    """``GET /v1/model``: the manifest of the version served, and since when."""

    loaded_at: str


class ModelList(msgspec.Struct):
    """``GET /v1/models``: every version in the registry (oldest first) and which is published,
    so an operator sees the versions an experiment or a rollback can name, with their offline
    metrics, without a shell on the registry's disk."""

    current: str | None  # the published version
    published: list[str]  # the publish history, oldest first (the rollback path)
    items: list[Manifest]
    unreadable: list[str] = msgspec.field(default_factory=list)  # versions whose manifest is bad


class ModelChange(msgspec.Struct):
    """``POST /v1/model/reload`` and ``/rollback``: the version served now, the one before,
    and whether it changed."""

    version: str
    previous: str | None
    changed: bool


# ---- batch jobs --------------------------------------------------------------------------------
class BatchWarning(msgspec.Struct, frozen=True):
    """An input row the job skipped (or, for histories, ignored): an id the model does not know."""

    line: int
    row: int
    id: int
    message: str


class BatchLinks(msgspec.Struct, frozen=True):
    self: str
    results: str
    results_csv: str


class BatchJob(msgspec.Struct, kw_only=True):
    """A batch job's status: what it is (``kind``: movies, users or histories), how far it got
    and what it found (``warnings``: the first 100 skipped ids; ``warning_count``: all)."""

    job_id: str
    status: str  # queued | running | done | failed
    kind: str
    k: int
    filename: str | None
    owner: int | None
    total_rows: int
    processed_rows: int
    progress: float
    result_rows: int
    model_version: str | None
    warnings: list[BatchWarning]
    warning_count: int
    attempts: int
    error: str | None
    created: str | None
    started: str | None
    finished: str | None
    expires_in: int | None
    links: BatchLinks


class BatchJobList(msgspec.Struct):
    items: list[BatchJob]


# One result row: ``row`` (the input row), the input id under its column name (``movie_id`` or
# ``user_id``), ``rank``, the result under its column (``similar_movie_id`` or ``movie_id``) and
# ``score``.
BatchRow = dict[str, int | float]


class BatchResults(msgspec.Struct):
    """A page of a finished job's results (``count``: rows in all); ``next_cursor`` asks for
    the next page (None after the last)."""

    job_id: str
    kind: str
    k: int
    model_version: str | None
    count: int
    cursor: int
    items: list[BatchRow]
    next_cursor: int | None
