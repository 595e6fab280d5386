"""Offline (batch) predictions: CSV validation, the job store and the queue, all in Redis.

A job is queued only after its whole file has been validated, so a rejected upload leaves
nothing behind. The queue is a Redis Stream read by a consumer group (at-least-once delivery:
a job stays pending until a worker acks it, and a dead worker's job is reclaimed). Everything
a job owns lives under ``<batch>:job:<id>`` and expires after ``settings.batch_ttl``, where
``<batch>`` is ``marquee:{<namespace>:batch}`` (:class:`BatchKeys`; one hash tag, so on a Redis
Cluster every transaction below stays in one slot):

    <batch>:job:<id>          hash: kind, k, owner, status, progress, model_version, ...
    <batch>:job:<id>:input    the validated ids and their file lines (JSON)
    <batch>:job:<id>:results  hash: chunk number -> JSON list of result rows
    <batch>:job:<id>:counts   hash: chunk number -> result rows in it
    <batch>:owner:<user>      sorted set of the user's job ids by creation time
    <batch>:stream            the queue (one entry per job: {"job": id})

All of it lives on the *state* Redis (``MARQUEE_STATE_REDIS_URL``), which must not evict: jobs are
refused with a 503 ``batch_unavailable`` on a server whose ``maxmemory-policy`` is not
``noeviction`` (:class:`DurabilityGuard`), and the log warns when it has no AOF.

Results are written per chunk with HSET, so a chunk computed twice (a worker killed after
writing, before acking) overwrites itself instead of adding rows: every row appears once.

Three kinds of upload, told apart by the header: ``movie_id`` (similar movies), ``user_id``
(recommendations for users the model knows) and both (``histories``: each user's rows are their
history, with optional ``rating`` and ``timestamp`` columns, so a MovieLens ratings file is a
valid upload; answered like ``predict`` and ``POST /v1/recommendations``). A histories job's
``total_rows`` counts its users: one history is one unit of work.

Row limit: a file with more than ``settings.batch_max_rows`` ids is a 400 ``too_many_rows``
(the bytes were acceptable; it is the content that is too long); more than
``settings.batch_max_bytes`` bytes is a 413 ``too_large``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from recommender import redisconn
from recommender.redisconn import AsyncClient, Durability, Namespace
from services.platform.errors import BadRequest, Conflict, NotFound, NotReady, PayloadTooLarge
from services.platform.params import MAX_ID
from services.platform.settings import Settings

log = logging.getLogger("marquee.batch")

GROUP = "marquee-batch-workers"
RECHECK_DURABILITY = 60.0  # seconds a state Redis's eviction policy is trusted before a re-read
MAX_ERRORS = 20  # validation errors reported per upload
MAX_WARNINGS = 100  # unknown-id warnings kept per job (the count is always exact)
K_DEFAULT, K_MAX = 10, 100
RECENT_KEEP = 50

# kind -> (input column, result column for the recommended movie)
KINDS = {
    "movies": ("movie_id", "similar_movie_id"),
    "users": ("user_id", "movie_id"),
    "histories": ("user_id", "movie_id"),  # user_id,movie_id[,rating][,timestamp] rows
}
_HEADER_NAMES = {"movieid": "movies", "userid": "users"}
_HISTORY_COLUMNS = {"rating": "rating", "timestamp": "timestamp"}
_DIGITS = re.compile(r"[0-9]{1,10}")  # ids are below 2**31: at most 10 digits
_STAMP = re.compile(r"[0-9]{1,18}")  # seconds (MovieLens) or milliseconds since 1970
_JOB_ID = re.compile(r"[0-9a-f]{32}")

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


@dataclass(frozen=True)
class BatchKeys:
    """Where one install's batch store keeps its jobs and queue (see the module docstring)."""

    prefix: str

    @classmethod
    def of(cls, settings: Settings) -> BatchKeys:
        return cls(Namespace.of(settings).batch)

    @property
    def stream(self) -> str:
        return f"{self.prefix}:stream"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def input(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:input"

    def results(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:results"

    def counts(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:counts"

    def owner(self, owner: int | str) -> str:
        return f"{self.prefix}:owner:{owner}"


def connect(settings: Settings) -> AsyncClient | None:
    """A client for the batch store on the state Redis, or None when there is none.

    Creating it does not connect; the first command does, so a down Redis shows up as
    ``batch_unavailable`` on use rather than as a failed startup.
    """
    url = settings.state_redis_candidates()
    if not url:
        return None
    return redisconn.connect(
        url, decode_responses=True, socket_connect_timeout=2.0, health_check_interval=30
    )


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Turn Redis failures into a 503 ``batch_unavailable`` (never a 500)."""
    try:
        yield
    except redisconn.FAILURES as exc:
        detail = str(exc) if isinstance(exc, OSError) else type(exc).__name__
        raise NotReady(
            f"the batch job store is unavailable ({detail})", code="batch_unavailable"
        ) from None


class EvictingStore(NotReady):
    """The state Redis may evict keys: jobs and results could vanish, so none are taken."""


class DurabilityGuard:
    """Batch jobs run only on a Redis that keeps them (``maxmemory-policy noeviction``).

    The policy is read on first use and again every ``RECHECK_DURABILITY`` seconds, so fixing
    the server's setting needs no restart. A server that does not say (CONFIG and INFO both
    disabled) is trusted with a warning: the operator has been told in the docs what it needs.
    """

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.found: Durability | None = None
        self._checked_at = float("-inf")

    async def check(self, client: AsyncClient) -> Durability:
        now = time.monotonic()
        if self.found is None or now - self._checked_at >= RECHECK_DURABILITY:
            found = await redisconn.durability(client)
            if found != self.found:
                self._report(found)
            self.found, self._checked_at = found, now
        found = self.found
        if found.evicts:
            raise EvictingStore(
                f"batch jobs are off: the state Redis at {redisconn.describe(self.url)} may evict "
                f"them ({found.describe()}); set maxmemory-policy noeviction (and appendonly yes) "
                "or point MARQUEE_STATE_REDIS_URL at a Redis that does",
                code="batch_unavailable",
            )
        return found

    def _report(self, found: Durability) -> None:
        extra = {"redis": redisconn.describe(self.url), "setup": found.describe()}
        if found.evicts:
            log.error("batch store: the state Redis evicts keys; batch jobs refused", extra=extra)
        elif found.policy is None:
            log.warning(
                "batch store: cannot read the state Redis's maxmemory-policy (CONFIG and INFO "
                "disabled); it must be noeviction",
                extra=extra,
            )
        elif found.aof is False:
            log.warning(
                "batch store: the state Redis has no AOF; a Redis restart loses queued jobs and "
                "results (appendonly yes keeps them)",
                extra=extra,
            )
        else:
            log.info("batch store: the state Redis keeps jobs", extra=extra)


# ---- validation --------------------------------------------------------------------------
@dataclass(frozen=True)
class ParsedUpload:
    """A validated upload: the kind of job and its ids with the file line of each (for
    ``histories``, ``ids`` are the users and ``movies`` / ``ratings`` / ``timestamps`` the rest
    of each row; ratings and timestamps are empty lists when the file has no such column)."""

    kind: str
    ids: list[int]
    lines: list[int]
    movies: list[int] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)

    def payload(self) -> dict:
        out: dict = {"ids": self.ids, "lines": self.lines}
        if self.kind == "histories":
            out |= {"movies": self.movies, "ratings": self.ratings, "timestamps": self.timestamps}
        return out


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _error(line: int, message: str, **extra: object) -> dict:
    return {"line": line, "message": message, **extra}


def _reject(code: str, line: int, message: str, **details: object) -> BadRequest:
    return BadRequest(
        f"line {line}: {message}",
        code=code,
        details={"errors": [_error(line, message)], **details},
    )


def parse_upload(data: bytes, *, max_bytes: int, max_rows: int) -> ParsedUpload:
    """Validate a whole CSV upload; raise a 400/413 whose details name every bad line.

    The kind of job comes from the header (``movie_id`` or ``user_id``; ``movieId`` and other
    spellings of the same name are accepted, other columns are ignored). Blank lines are
    skipped. Up to ``MAX_ERRORS`` bad lines are reported at once, so a user fixes them in one go.
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the file is {len(data)} bytes; the limit is {max_bytes} bytes",
            code="too_large",
            details={"max_bytes": max_bytes},
        )
    if not data.strip():
        raise _reject(
            "empty_file", 1, "the file is empty; expected a header 'movie_id' or 'user_id'"
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _reject(
            "invalid_encoding", _line_of(data, nul), "binary data (NUL byte); upload a UTF-8 CSV"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _reject(
            "invalid_encoding",
            _line_of(data, exc.start),
            f"not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8 CSV",
        ) from None

    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    try:
        return _parse_rows(reader, max_rows)
    except csv.Error as exc:
        raise _reject("invalid_csv", reader.line_num, f"malformed CSV: {exc}") from None


def _parse_rows(reader: Iterator[list[str]], max_rows: int) -> ParsedUpload:
    header: list[str] | None = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = row
            break
    header_line = reader.line_num  # type: ignore[attr-defined]
    kind, column = _header_kind(header or [], header_line)
    if kind == "histories":
        return _parse_histories(reader, header or [], header_line, max_rows)
    name = KINDS[kind][0]

    ids: list[int] = []
    lines: list[int] = []
    errors: list[dict] = []
    error_count = 0
    line_num = header_line
    for row in reader:
        # a record can span lines (a quoted newline): report the line where it starts
        line, line_num = line_num + 1, reader.line_num  # type: ignore[attr-defined]
        if not any(cell.strip() for cell in row):
            continue
        raw = row[column].strip() if column < len(row) else None
        value = int(raw) if raw is not None and _DIGITS.fullmatch(raw) else 0
        if not 0 < value <= MAX_ID:
            error_count += 1
            if len(errors) < MAX_ERRORS:
                message = (
                    f"missing the {name} column"
                    if raw is None
                    else f"{raw!r} is not a valid {name} (a positive integer)"
                )
                errors.append(_error(line, message, value=raw))
            continue
        if len(ids) >= max_rows:
            raise _reject(
                "too_many_rows",
                line,
                f"more than {max_rows} rows; split the file",
                max_rows=max_rows,
            )
        ids.append(value)
        lines.append(line)
    if errors:
        first = errors[0]
        more = f" ({error_count} lines have errors)" if error_count > 1 else ""
        raise BadRequest(
            f"line {first['line']}: {first['message']}{more}",
            code="invalid_rows",
            details={"errors": errors, "error_count": error_count},
        )
    if not ids:
        raise _reject("no_rows", header_line + 1, f"the file has a header but no {name} rows")
    return ParsedUpload(kind=kind, ids=ids, lines=lines)


def _norm(cell: str) -> str:
    return re.sub(r"[\s_\-]", "", cell.strip().lower())


def _header_kind(header: list[str], line: int) -> tuple[str, int]:
    found = [
        (_HEADER_NAMES[norm], i)
        for i, cell in enumerate(header)
        if (norm := _norm(cell)) in _HEADER_NAMES
    ]
    kinds = [kind for kind, _ in found]
    if len(kinds) != len(set(kinds)):
        raise _reject("invalid_header", line, "the header names a column twice")
    if set(kinds) == {"movies", "users"}:
        return "histories", -1
    if not found:
        got = ",".join(header)[:80]
        raise _reject(
            "invalid_header",
            line,
            f"expected a header 'movie_id' (similar movies), 'user_id' (recommendations) or "
            f"'user_id,movie_id[,rating,timestamp]' (histories), got {got!r}",
        )
    return found[0]


def _parse_histories(
    reader: Iterator[list[str]], header: list[str], header_line: int, max_rows: int
) -> ParsedUpload:
    """``user_id,movie_id[,rating][,timestamp]`` rows (any order, other columns ignored)."""
    names = [_norm(c) for c in header]
    col = {"user": names.index("userid"), "movie": names.index("movieid")}
    for name in _HISTORY_COLUMNS:
        if name in names:
            col[name] = names.index(name)
    parsed = ParsedUpload(kind="histories", ids=[], lines=[])
    errors: list[dict] = []
    error_count = 0
    line_num = header_line
    for row in reader:
        line, line_num = line_num + 1, reader.line_num  # type: ignore[attr-defined]
        if not any(cell.strip() for cell in row):
            continue
        values = {n: (row[i].strip() if i < len(row) else None) for n, i in col.items()}
        problem = _history_problem(values)
        if problem:
            error_count += 1
            if len(errors) < MAX_ERRORS:
                errors.append(_error(line, problem[0], value=problem[1]))
            continue
        if len(parsed.ids) >= max_rows:
            raise _reject(
                "too_many_rows",
                line,
                f"more than {max_rows} rows; split the file",
                max_rows=max_rows,
            )
        parsed.ids.append(int(values["user"]))  # type: ignore[arg-type]
        parsed.movies.append(int(values["movie"]))  # type: ignore[arg-type]
        if "rating" in col:
            parsed.ratings.append(float(values["rating"]))  # type: ignore[arg-type]
        if "timestamp" in col:
            parsed.timestamps.append(int(values["timestamp"]))  # type: ignore[arg-type]
        parsed.lines.append(line)
    if errors:
        first = errors[0]
        more = f" ({error_count} lines have errors)" if error_count > 1 else ""
        raise BadRequest(
            f"line {first['line']}: {first['message']}{more}",
            code="invalid_rows",
            details={"errors": errors, "error_count": error_count},
        )
    if not parsed.ids:
        raise _reject("no_rows", header_line + 1, "the file has a header but no history rows")
    return parsed


def _history_problem(values: dict[str, str | None]) -> tuple[str, str | None] | None:
    """What is wrong with one history row, or None."""
    for name, label in (("user", "user_id"), ("movie", "movie_id")):
        raw = values[name]
        if raw is None:
            return f"missing the {label} column", None
        if not (_DIGITS.fullmatch(raw) and 0 < int(raw) <= MAX_ID):
            return f"{raw!r} is not a valid {label} (a positive integer)", raw
    rating = values.get("rating")
    if "rating" in values:
        try:
            ok = rating is not None and math.isfinite(float(rating))
        except ValueError:
            ok = False
        if not ok:
            return f"{rating!r} is not a valid rating (a number)", rating
    stamp = values.get("timestamp")
    if "timestamp" in values and not (stamp is not None and _STAMP.fullmatch(stamp)):
        return f"{stamp!r} is not a valid timestamp (unix seconds)", stamp
    return None


def parse_k(raw: str | None) -> int:
    """The ``k`` (results per id) of a job: 1..100, default 10."""
    if raw is None or raw.strip() == "":
        return K_DEFAULT
    raw = raw.strip()
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= K_MAX:
        raise BadRequest(
            f"k must be an integer from 1 to {K_MAX}, got {raw!r}", code="invalid_param"
        )
    return int(raw)


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id or ""):
        raise NotFound(f"no batch job {job_id!r}", code="unknown_job")
    return job_id


# ---- rendering ---------------------------------------------------------------------------
def csv_columns(kind: str) -> list[str]:
    source, target = KINDS[kind]
    return ["row", source, "rank", target, "score", "model_version"]


def results_csv(kind: str, rows: list[dict], model_version: str, header: bool = True) -> str:
    """Result rows as CSV text (with the model version on every row, so a file stands alone)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = csv_columns(kind)
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([*(row[c] for c in columns[:-1]), model_version])
    return out.getvalue()


def _iso(value: str | None) -> str | None:
    if not value:
        return None
    return datetime.fromtimestamp(float(value), UTC).isoformat(timespec="seconds")


def job_view(job_id: str, fields: dict[str, str], ttl: int) -> dict:
    """The public shape of a job, from its Redis hash."""
    total = int(fields.get("total_rows", 0))
    processed = int(fields.get("processed_rows", 0))
    owner = fields.get("owner") or None
    return {
        "job_id": job_id,
        "status": fields.get("status", QUEUED),
        "kind": fields.get("kind"),
        "k": int(fields.get("k", K_DEFAULT)),
        "filename": fields.get("filename") or None,
        "owner": int(owner) if owner else None,
        "total_rows": total,
        "processed_rows": processed,
        "progress": round(processed / total, 4) if total else 0.0,
        "result_rows": int(fields.get("result_rows", 0)),
        "model_version": fields.get("model_version") or None,
        "warnings": orjson.loads(fields.get("warnings") or "[]"),
        "warning_count": int(fields.get("warning_count", 0)),
        "attempts": int(fields.get("attempts", 0)),
        "error": fields.get("error") or None,
        "created": _iso(fields.get("created")),
        "started": _iso(fields.get("started")),
        "finished": _iso(fields.get("finished")),
        "expires_in": ttl if ttl >= 0 else None,
    }


# ---- the store ---------------------------------------------------------------------------
class BatchJobs:
    """Submit jobs and read their status and results; the web pages and the API both use it."""

    def __init__(self, redis: AsyncClient | None, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = BatchKeys.of(settings)
        self.guard = DurabilityGuard(settings.state_redis_candidates())

    def _client(self) -> AsyncClient:
        if self.redis is None:
            raise NotReady(
                "batch jobs need a state Redis (MARQUEE_STATE_REDIS_URL or MARQUEE_REDIS_URL)",
                code="batch_unavailable",
            )
        return self.redis

    async def submit(
        self, data: bytes, filename: str | None, owner: int | None, k: int = K_DEFAULT
    ) -> dict:
        """Validate the whole file, then store and queue the job in one transaction."""
        client = self._client()
        s = self.settings
        parsed = parse_upload(data, max_bytes=s.batch_max_bytes, max_rows=s.batch_max_rows)
        job_id = uuid.uuid4().hex
        now = time.time()
        units = len(set(parsed.ids)) if parsed.kind == "histories" else len(parsed.ids)
        fields = {
            "kind": parsed.kind,
            "k": k,
            "owner": owner or "",
            "filename": (filename or "")[:200],
            "status": QUEUED,
            "total_rows": units,
            "processed_rows": 0,
            "chunk_size": max(1, s.batch_chunk_size),
            "created": now,
            "attempts": 0,
        }
        payload = orjson.dumps(parsed.payload())
        keys = self.keys
        with store_errors():
            await self.guard.check(client)
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(keys.job(job_id), mapping=fields)
                pipe.expire(keys.job(job_id), s.batch_ttl)
                pipe.set(keys.input(job_id), payload, ex=s.batch_ttl)
                if owner:
                    pipe.zadd(keys.owner(owner), {job_id: now})
                    pipe.zremrangebyrank(keys.owner(owner), 0, -RECENT_KEEP - 1)
                    pipe.expire(keys.owner(owner), s.batch_ttl)
                pipe.xadd(keys.stream, {"job": job_id})
                await pipe.execute()
        return job_view(job_id, {k_: str(v) for k_, v in fields.items()}, s.batch_ttl)

    async def status(self, job_id: str) -> dict:
        client = self._client()
        check_job_id(job_id)
        with store_errors():
            async with client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.job(job_id))
                pipe.ttl(self.keys.job(job_id))
                fields, ttl = await pipe.execute()
        if not fields:
            raise NotFound(f"no batch job {job_id!r} (unknown or expired)", code="unknown_job")
        return job_view(job_id, fields, ttl)

    async def finished(self, job_id: str) -> dict:
        """The job's status, or a 409 when its results are not ready (or never will be)."""
        job = await self.status(job_id)
        if job["status"] == FAILED:
            raise Conflict(f"batch job {job_id} failed: {job['error']}", code="job_failed")
        if job["status"] != DONE:
            raise Conflict(
                f"batch job {job_id} is {job['status']} ({job['processed_rows']} of "
                f"{job['total_rows']} rows); results are ready when it is done",
                code="job_not_finished",
            )
        return job

    async def result_chunks(self, job_id: str) -> AsyncIterator[list[dict]]:
        """The result rows chunk by chunk, in row order (for streaming large results)."""
        client = self._client()
        with store_errors():
            chunks = sorted(int(c) for c in await client.hkeys(self.keys.results(job_id)))
        for chunk in chunks:
            with store_errors():
                raw = await client.hget(self.keys.results(job_id), str(chunk))
            if raw is not None:
                yield orjson.loads(raw)

    async def results(self, job_id: str, limit: int | None = None) -> list[dict]:
        """A finished job's result rows in order (the first ``limit`` of them if given)."""
        await self.finished(job_id)
        rows: list[dict] = []
        async for chunk in self.result_chunks(job_id):
            rows.extend(chunk)
            if limit is not None and len(rows) >= limit:
                return rows[:limit]
        return rows

    async def recent(self, owner: int, limit: int = 20) -> list[dict]:
        """The owner's most recent jobs, newest first (expired ones are dropped from the index)."""
        client = self._client()
        with store_errors():
            ids = await client.zrevrange(self.keys.owner(owner), 0, max(limit, 1) - 1)
            if not ids:
                return []
            async with client.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self.keys.job(job_id))
                    pipe.ttl(self.keys.job(job_id))
                replies = await pipe.execute()
            jobs, gone = [], []
            for i, job_id in enumerate(ids):
                fields, ttl = replies[2 * i], replies[2 * i + 1]
                if fields:
                    jobs.append(job_view(job_id, fields, ttl))
                else:
                    gone.append(job_id)
            if gone:
                await client.zrem(self.keys.owner(owner), *gone)
        return jobs

    async def queue_depth(self) -> int:
        """Jobs waiting or running (workers delete a job's stream entry once it is done)."""
        client = self._client()
        with store_errors():
            return int(await client.xlen(self.keys.stream))
