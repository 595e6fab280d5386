"""The batch-jobs API: ``POST /v1/batch`` (CSV upload), ``GET /v1/batch/{job_id}`` (status) and
``GET /v1/batch/{job_id}/results?format=json|csv`` (all of it, streamed; or with ``cursor``,
a page as JSON), and ``GET /v1/users/{user_id}/batch`` (a user's recent jobs).

Uploads are read as a stream with the batch size limit (``settings.batch_max_bytes``), not the
app's small JSON body limit, and a declared Content-Length over the limit is refused before a
byte is read. Only a user (their session, ``X-Marquee-Session``) or a service holding the service
token may queue a job, since a job costs compute; a user's job is private to that user (and to
services); a service's job is readable by whoever has its id (ids are 128-bit random).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from recommender.batch import (
    K_MAX,
    BatchJobs,
    connect,
    csv_columns,
    parse_k,
    results_csv,
)
from recommender.redisconn import describe
from recommender.schemas import BatchJob, BatchJobList, BatchResults, BatchRow
from services.platform.app import SETTINGS, add_metrics_refresher, add_openapi_paths, add_route
from services.platform.auth import SESSION_HEADER, bearer_ok, session_user
from services.platform.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from services.platform.jsonutil import json_response
from services.platform.middleware import METRICS
from services.platform.openapi import operation, path_param, query_param
from services.platform.params import path_id, query_int
from services.platform.settings import Settings

log = logging.getLogger("marquee.batch")
RECENT = 20  # jobs listed per user

BATCH_JOBS = web.AppKey("batch_jobs", BatchJobs)
READ_CHUNK = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, headers and small fields around the file
RAW_TYPES = {
    "",
    "text/csv",
    "text/plain",
    "application/csv",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
}


@dataclass
class Upload:
    """What a client sent: the file's bytes, its name, and the other (small) form fields."""

    data: bytes
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


async def _read_limited(read, limit: int) -> bytes:
    """Read chunks until EOF; 413 as soon as more than ``limit`` bytes arrived."""
    parts: list[bytes] = []
    size = 0
    while chunk := await read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the file is larger than the limit of {limit} bytes",
                code="too_large",
                details={"max_bytes": limit},
            )
        parts.append(chunk)
    return b"".join(parts)


async def read_upload(request: web.Request, max_bytes: int) -> Upload:
    """The uploaded CSV from a multipart form (field ``file``) or a raw ``text/csv`` body."""
    declared = request.content_length
    ctype = request.content_type
    multipart = ctype.startswith("multipart/")
    if declared is not None and declared > max_bytes + (MULTIPART_OVERHEAD if multipart else 0):
        raise PayloadTooLarge(
            f"the upload is {declared} bytes; the limit is {max_bytes} bytes",
            code="too_large",
            details={"max_bytes": max_bytes},
        )
    if not multipart:
        if ctype not in RAW_TYPES:
            raise UnsupportedMediaType(
                f"send the CSV as text/csv or as a multipart form field 'file', not {ctype}"
            )
        return Upload(await _read_limited(request.content.read, max_bytes), None)
    try:
        return await _read_multipart(request, max_bytes)
    except (ValueError, LookupError, HttpProcessingError):  # no boundary, bad part headers
        raise BadRequest("the multipart body could not be read", code="invalid_form") from None


async def _read_multipart(request: web.Request, max_bytes: int) -> Upload:
    upload = Upload(b"", None)
    got_file = False
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "file" and not got_file:
            got_file = True
            upload.filename = part.filename
            upload.data = await _read_limited(part.read_chunk, max_bytes)
        elif part.name and len(upload.fields) < 10:
            raw = await _read_limited(part.read_chunk, 4096)
            upload.fields[part.name] = raw.decode("utf-8", "replace")
        else:
            await _read_limited(part.read_chunk, max_bytes)
    return upload


def request_user(request: web.Request, settings: Settings) -> int | None:
    return session_user(
        request.headers.get(SESSION_HEADER), settings.secret_key, settings.session_max_age
    )


def _is_service(request: web.Request) -> bool:
    return bearer_ok(request.headers.get("Authorization"), request.app[SETTINGS].service_token)


def _authorize(request: web.Request, job: BatchJob) -> None:
    if job.owner is None or _is_service(request):
        return
    if request_user(request, request.app[SETTINGS]) != job.owner:
        raise Forbidden("this batch job belongs to another user", code="not_your_job")


def _submitter(request: web.Request) -> int | None:
    """The user queueing a job (their own), or None for a service; 401 for anybody else."""
    user = request_user(request, request.app[SETTINGS])
    if user is not None:
        return user
    if _is_service(request):
        return None
    raise Unauthorized(
        f"batch jobs are for users (send {SESSION_HEADER}) and services (a bearer token)"
    )


async def submit(request: web.Request) -> web.Response:
    jobs = request.app[BATCH_JOBS]
    settings = request.app[SETTINGS]
    owner = _submitter(request)
    k = parse_k(request.query.get("k"))  # cheap checks first: nothing is read on a bad k
    upload = await read_upload(request, settings.batch_max_bytes)
    if "k" in upload.fields:
        k = parse_k(upload.fields["k"])
    filename = upload.filename or request.query.get("filename") or None
    job = await jobs.submit(upload.data, filename, owner, k)
    request.app[METRICS].batch_queue_depth.set(await jobs.queue_depth())
    return json_response(job, status=202, headers={"Location": job.links.self})


async def status(request: web.Request) -> web.Response:
    job = await request.app[BATCH_JOBS].status(request.match_info["job_id"])
    _authorize(request, job)
    return json_response(job)


async def recent(request: web.Request) -> web.Response:
    """A user's recent jobs, newest first: to that user (or a service) only."""
    user_id = path_id(request, "user_id")
    if not _is_service(request) and request_user(request, request.app[SETTINGS]) != user_id:
        raise Forbidden("these are another user's batch jobs", code="not_your_jobs")
    return json_response(BatchJobList(await request.app[BATCH_JOBS].recent(user_id, RECENT)))


async def results(request: web.Request) -> web.StreamResponse:
    jobs = request.app[BATCH_JOBS]
    fmt = request.query.get("format") or (
        "csv" if "text/csv" in request.headers.get("Accept", "") else "json"
    )
    if fmt not in ("json", "csv"):
        raise BadRequest(f"format must be json or csv, got {fmt!r}", code="invalid_param")
    job = await jobs.status(request.match_info["job_id"])
    _authorize(request, job)
    job = await jobs.finished(job.job_id)
    if "cursor" in request.query:
        if fmt != "json":
            raise BadRequest("pages (cursor) come as JSON", code="invalid_param")
        cursor = query_int(request, "cursor", 0, minimum=0, maximum=10**9)
        return json_response(await jobs.results_page(job, cursor))
    return await stream_results(request, jobs, job, fmt)


async def stream_results(
    request: web.Request, jobs: BatchJobs, job: BatchJob, fmt: str
) -> web.StreamResponse:
    """Send a finished job's results chunk by chunk (a large job never sits whole in memory)."""
    return await send_results(request, job, fmt, jobs.result_chunks(job.job_id))


async def send_results(
    request: web.Request, job: BatchJob, fmt: str, chunks: AsyncIterator[list[BatchRow]]
) -> web.StreamResponse:
    """Stream ``chunks`` of a finished job's rows as a CSV or JSON download."""
    job_id, version = job.job_id, job.model_version or ""
    response = web.StreamResponse(
        headers={
            "Content-Disposition": f'attachment; filename="batch-{job_id}.{fmt}"',
            "X-Model-Version": version,
        }
    )
    response.content_type = "text/csv" if fmt == "csv" else "application/json"
    response.charset = "utf-8"
    first = await anext(chunks, None)  # read before the headers go out: errors stay JSON
    await response.prepare(request)
    if fmt == "csv":
        await response.write(",".join(csv_columns(job.kind)).encode() + b"\n")
        async for rows in _chain(first, chunks):
            await response.write(results_csv(job.kind, rows, version, header=False).encode())
    else:
        head = {"job_id": job_id, "kind": job.kind, "k": job.k, "model_version": job.model_version}
        await response.write(
            orjson.dumps(head)[:-1] + b',"count":' + str(job.result_rows).encode() + b',"items":['
        )
        sep = b""
        async for rows in _chain(first, chunks):
            if rows:
                await response.write(sep + b",".join(orjson.dumps(r) for r in rows))
                sep = b","
        await response.write(b"]}")
    await response.write_eof()
    return response


async def _chain(
    first: list[BatchRow] | None, rest: AsyncIterator[list[BatchRow]]
) -> AsyncIterator[list[BatchRow]]:
    if first is None:
        return
    yield first
    async for rows in rest:
        yield rows


async def batch_store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the batch store's Redis client (a lazy connection) and close it on shutdown."""
    jobs = app[BATCH_JOBS]
    jobs.redis = connect(app[SETTINGS])
    url = app[SETTINGS].state_redis_candidates()
    log.info(
        f"batch store: state redis at {describe(url)}, keys under {jobs.keys.prefix}",
        extra={"namespace": app[SETTINGS].redis_namespace},
    )
    try:
        yield
    finally:
        if jobs.redis is not None:
            await jobs.redis.aclose()
            jobs.redis = None


def setup_batch_store(app: web.Application) -> None:
    """Put the batch store on ``app`` once, however many parts of the app (the API, the web
    pages, or both in the monolith) use it."""
    if BATCH_JOBS not in app:
        app[BATCH_JOBS] = BatchJobs(None, app[SETTINGS])
        app.cleanup_ctx.append(batch_store_ctx)


def setup_batch_api(app: web.Application) -> None:
    """Add the batch-jobs routes to an app (the recommender's, or the monolith's)."""
    setup_batch_store(app)
    add_route(app, "POST", "/v1/batch", submit)
    add_route(app, "GET", "/v1/batch/{job_id}", status)
    add_route(app, "GET", "/v1/batch/{job_id}/results", results)
    add_route(app, "GET", "/v1/users/{user_id}/batch", recent)
    add_openapi_paths(app, batch_paths(app[SETTINGS]))

    async def refresh_queue_depth() -> None:  # workers drain the queue in other processes
        app[METRICS].batch_queue_depth.set(await app[BATCH_JOBS].queue_depth())

    add_metrics_refresher(app, refresh_queue_depth)


# ---- OpenAPI ---------------------------------------------------------------------------------
JOB_ID_PARAM = {  # also the web server's batch pages' path parameter
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "the id POST /v1/batch returned",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
_K = query_param(
    "k", {"type": "integer", "minimum": 1, "maximum": K_MAX, "default": 10}, "results per id"
)


def batch_paths(settings: Settings) -> dict:
    csv_doc = (
        "A CSV with a header `movie_id` (similar movies for each) or `user_id` "
        f"(recommendations for each) and one id per line; at most {settings.batch_max_bytes} "
        f"bytes and {settings.batch_max_rows} rows."
    )
    post = operation(
        "queue a batch job from a CSV of movie ids, user ids or histories (a user or a service)",
        returns=BatchJob,
        parameters=[_K],
        errors=(400, 401, 413, 415, 503),
        ok=202,
        security=True,
    )
    post["description"] = csv_doc
    post["requestBody"] = {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string", "minLength": 1}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "k": {"type": "integer", "minimum": 1, "maximum": K_MAX},
                    },
                }
            },
        },
    }
    results_op = operation(
        "a finished job's results (409 while it runs): all of them streamed, or with cursor "
        "(0 for the first) a page of them as JSON",
        returns=BatchResults,
        parameters=[
            JOB_ID_PARAM,
            query_param("format", {"type": "string", "enum": ["json", "csv"]}, "json or csv"),
            query_param("cursor", {"type": "integer", "minimum": 0}, "a page from here"),
        ],
        errors=(400, 403, 404, 409, 503),
    )
    results_op["responses"]["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    return {
        "/v1/batch": {"post": post},
        "/v1/batch/{job_id}": {
            "get": operation(
                "a batch job's status and progress",
                returns=BatchJob,
                parameters=[JOB_ID_PARAM],
                errors=(403, 404, 503),
            )
        },
        "/v1/batch/{job_id}/results": {"get": results_op},
        "/v1/users/{user_id}/batch": {
            "get": operation(
                "a user's recent batch jobs, newest first (that user or a service)",
                returns=BatchJobList,
                parameters=[path_param("user_id", "the user whose jobs they are")],
                errors=(400, 403, 503),
                security=True,
            )
        },
    }
