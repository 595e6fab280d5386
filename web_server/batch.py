"""The batch pages: upload a CSV (``/batch``), follow the job (``/batch/{job_id}``), download it.

The pages speak to the recommender's batch API through the batch client (``clients.batch``: over
HTTP, or in-process in the monolith) with the viewer's session, like every other backend: the
web server knows nothing of where jobs are kept. A user sees only their own jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from recommender.batch import DONE, FAILED, KINDS, check_job_id, parse_k
from recommender.batch_api import JOB_ID_PARAM, read_upload, send_results
from recommender.schemas import BatchJob, BatchRow
from services.catalog.schemas import Movies
from services.platform.app import SETTINGS, add_openapi_paths
from services.platform.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    NotReady,
    PayloadTooLarge,
)
from services.platform.openapi import operation
from web_server import session
from web_server.clients import BackendError, BackendRejected
from web_server.render import page
from web_server.state import CLIENTS

UNAVAILABLE = "batch jobs are unavailable right now; please try again shortly"
PREVIEW_ROWS = 100
RECENT_JOBS = 20
REFRESH_SECONDS = 2
TITLE_TIMEOUT = 0.5


def _limits(request: web.Request) -> dict:
    settings = request.app[SETTINGS]
    return {
        "max_mb": round(settings.batch_max_bytes / (1 << 20), 1),
        "max_rows": settings.batch_max_rows,
        "ttl_hours": round(settings.batch_ttl / 3600),
    }


def _token(request: web.Request) -> str:
    return session.session_cookie(request) or ""


def _as_error(exc: BackendRejected) -> ApiError:
    """The batch API's 4xx as the same error on the page (its bad lines included)."""
    error = ApiError(exc.message, code=exc.code, details=exc.details)
    error.status = exc.status
    return error


async def _render_form(
    request: web.Request, *, error: ApiError | None = None, k: str = "10", status: int = 200
) -> web.Response:
    user = session.current_user(request)
    jobs: list[BatchJob] = []
    unavailable = None
    if user is not None:
        try:
            jobs = await request.app[CLIENTS].batch.recent(user, _token(request))
        except (BackendError, BackendRejected) as exc:
            unavailable = exc.message if isinstance(exc, BackendRejected) else UNAVAILABLE
    details = error.details if error is not None and isinstance(error.details, dict) else {}
    context = {
        "jobs": jobs,
        "unavailable": unavailable,
        "error": error.message if error is not None else None,
        "error_lines": details.get("errors", []),
        "error_count": details.get("error_count"),
        "k": k,
        "limits": _limits(request),
    }
    return page(request, "batch.html", context, status=status)


async def batch_page(request: web.Request) -> web.Response:
    return await _render_form(request)


async def batch_upload(request: web.Request) -> web.StreamResponse:
    """Validate and queue the upload, then 303 to the job's page; errors go back on the form."""
    user = session.current_user(request)
    if user is None:
        raise Forbidden("log in to run batch jobs", code="login_required")
    settings = request.app[SETTINGS]
    try:
        upload = await read_upload(request, settings.batch_max_bytes)
    except PayloadTooLarge as exc:
        return await _render_form(request, error=exc, status=exc.status)
    session.require_csrf(request, upload.fields)
    k_raw = upload.fields.get("k", "10")[:10]
    batch = request.app[CLIENTS].batch
    try:
        k = parse_k(k_raw)
        if not upload.data and upload.filename is None:
            raise BadRequest("choose a CSV file to upload", code="no_file")
        job = await batch.submit(upload.data, upload.filename, k, user, _token(request))
    except (BadRequest, PayloadTooLarge) as exc:
        return await _render_form(request, error=exc, k=k_raw, status=exc.status)
    except BackendRejected as exc:
        return await _render_form(request, error=_as_error(exc), k=k_raw, status=exc.status)
    except BackendError:
        raise NotReady(UNAVAILABLE, code="batch_unavailable") from None
    raise web.HTTPSeeOther(f"/batch/{job.job_id}")


async def _own_job(request: web.Request) -> BatchJob:
    user = session.current_user(request)
    job_id = check_job_id(request.match_info["job_id"])
    if user is None:
        raise web.HTTPSeeOther(f"/login?next=/batch/{job_id}")
    try:
        return await request.app[CLIENTS].batch.status(job_id, user, _token(request))
    except BackendRejected as exc:
        if exc.status == 403:
            raise Forbidden("this batch job belongs to another user", code="not_your_job") from None
        raise NotFound(exc.message, code=exc.code) from None
    except BackendError:
        raise NotReady(UNAVAILABLE, code="batch_unavailable") from None


async def _pages(request: web.Request, job: BatchJob) -> AsyncIterator[list[BatchRow]]:
    """A finished job's rows, page after page, through the batch client."""
    user, token = session.current_user(request) or 0, _token(request)
    cursor: int | None = 0
    while cursor is not None:
        try:
            page_ = await request.app[CLIENTS].batch.results(job.job_id, user, token, cursor)
        except BackendRejected as exc:
            raise _as_error(exc) from None
        except BackendError:
            raise NotReady(UNAVAILABLE, code="batch_unavailable") from None
        yield page_.items
        cursor = page_.next_cursor


async def _titles(request: web.Request, rows: list[BatchRow], kind: str) -> dict[int, str]:
    """Movie titles for the preview, best effort: the page never waits long or fails for them."""
    from web_server.state import CLIENTS

    clients = request.app[CLIENTS]
    source, target = KINDS[kind]
    ids = list(
        dict.fromkeys(
            [int(r[target]) for r in rows]
            + ([int(r[source]) for r in rows] if kind == "movies" else [])
        )
    )
    batches = [ids[i : i + 100] for i in range(0, len(ids), 100)]
    titles: dict[int, str] = {}
    found = await asyncio.gather(
        *(clients.catalog.movies(b, timeout=TITLE_TIMEOUT) for b in batches),
        return_exceptions=True,
    )
    for result in found:
        if isinstance(result, Movies):
            titles.update({m.id: m.title for m in result.items})
    return titles


async def job_page(request: web.Request) -> web.Response:
    job = await _own_job(request)
    rows: list[BatchRow] = []
    titles: dict[int, str] = {}
    if job.status == DONE:
        rows = (await anext(_pages(request, job), []))[:PREVIEW_ROWS]
        titles = await _titles(request, rows, job.kind)
    running = job.status not in (DONE, FAILED)
    source, target = KINDS.get(job.kind, ("id", "movie_id"))
    context = {
        "job": job,
        "rows": rows,
        "titles": titles,
        "source": source,
        "target": target,
        "running": running,
        "refresh": REFRESH_SECONDS,
        "percent": round(100 * job.progress),
        "preview_rows": PREVIEW_ROWS,
    }
    response = page(request, "batch_job.html", context)
    if running:
        response.headers["Refresh"] = str(REFRESH_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return response


async def job_results(request: web.Request) -> web.StreamResponse:
    """The whole result as a download, streamed page by page from the batch API."""
    job = await _own_job(request)
    return await send_results(request, job, request.match_info["fmt"], _pages(request, job))


def setup_batch_pages(app: web.Application) -> None:
    """Add the batch pages to the web app (its templates must already be set up)."""
    app.router.add_get("/batch", batch_page, name="batch")
    app.router.add_post("/batch", batch_upload)
    app.router.add_get("/batch/{job_id}", job_page, name="batch_job")
    app.router.add_get(
        "/batch/{job_id}/results.{fmt:(csv|json)}", job_results, name="batch_results"
    )
    add_openapi_paths(app, batch_page_paths())


def batch_page_paths() -> dict:
    """The batch pages in the web server's /openapi.json (HTML, the session user's own jobs)."""
    html = "text/html"
    fmt = {
        "name": "fmt",
        "in": "path",
        "required": True,
        "description": "csv or json",
        "schema": {"type": "string", "enum": ["csv", "json"]},
    }
    upload = operation(
        "Queue a batch job from an uploaded CSV (logged in; CSRF token)",
        ok=303,
        errors=(400, 403, 413),
        content_type=html,
    )
    upload["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "csrf_token": {"type": "string"},
                        "k": {"type": "integer"},
                        "file": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
    return {
        "/batch": {
            "get": operation(
                "Batch upload form and the user's recent jobs (HTML)", errors=(), content_type=html
            ),
            "post": upload,
        },
        "/batch/{job_id}": {
            "get": operation(
                "A batch job's progress and results preview (HTML; owner only)",
                parameters=[JOB_ID_PARAM],
                errors=(403, 404),
                content_type=html,
            )
        },
        "/batch/{job_id}/results.{fmt}": {
            "get": operation(
                "A finished job's results as CSV or JSON (owner only)",
                parameters=[JOB_ID_PARAM, fmt],
                errors=(403, 404, 409),
            )
        },
    }
