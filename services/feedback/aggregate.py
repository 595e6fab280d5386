"""Counting the feedback: impressions and clicks per (experiment, arm, model version), in total
and per minute, from the events the web side buffers.

Two sinks, one reader interface (``async read(key) -> dict[str, int]``, the counts hash of
``FeedbackKeys.counts``):

- :class:`RedisAggregator` consumes the feedback stream (``FeedbackKeys.stream``) in the
  consumer group ``FeedbackKeys.group``. Counting an entry and acknowledging it are ONE Lua
  script: the script XACKs the entry and applies its counts only when the XACK removed it from
  the pending list, and only when the batch's ``counted`` marker was not set yet (SET NX, TTL a
  day). So an entry delivered twice (a claim racing a slow consumer) counts once, a batch added
  twice (a retried XADD) counts once, and a worker killed at any instant leaves either nothing
  counted and the entry pending (another worker claims it after ``feedback_claim_idle``) or
  everything counted and the entry acknowledged. Nothing is lost, nothing is counted twice.
- :class:`LocalCounts` is the no-Redis mode: the web process applies its own batches in-process
  and keeps them in a JSON file in the var dir (atomic replace, loaded at start).

The stream is bounded (``XADD ... MAXLEN ~ feedback_stream_max``): when the aggregators are
down for longer than the bound holds, the oldest events are dropped rather than Redis's memory
growing without limit; the backlog gauge shows it coming.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import msgspec
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from recommender import redisconn
from recommender.redisconn import AsyncClient
from services.feedback.schemas import EventBatch, FeedbackKeys, Impression
from services.platform.settings import AUTO, Settings

log = logging.getLogger("marquee.feedback")

COUNTED_TTL = 24 * 3600  # a batch's "counted" marker: far longer than any retry of its XADD
BACKOFF_START, BACKOFF_MAX = 0.2, 5.0
PRUNE_EVERY = 60.0  # seconds between sweeps of dead consumers out of the group
FIELD = b"b"  # the stream entry's one field: an EventBatch as JSON

_decode_batch = msgspec.json.Decoder(EventBatch).decode

# XREADGROUP's reply: [(stream, [(entry id, {field: value} or None when trimmed)])]
StreamReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]]
Increments = dict[str, dict[str, int]]  # counts key -> field -> amount


class CountsReader(Protocol):
    """``read(key)``: the counts hash of a ``FeedbackKeys.counts`` key (fields -> ints; {} when
    nothing was counted)."""

    async def read(self, key: str) -> dict[str, int]: ...


COUNTS_MARK = ":counts:"


def stats_key(keys: FeedbackKeys) -> str:
    """Hash of the aggregators' own tallies: ``batches`` counted, ``duplicates`` skipped (a
    batch added twice), ``malformed`` entries dropped. Under the feedback hash tag, so the
    counting script may touch it."""
    return f"{keys.prefix}:aggregator"


def increments(batch: EventBatch, keys: FeedbackKeys) -> Increments:
    """What one batch adds: per counts hash, ``impressions``/``clicks`` and their per-minute
    ``i:<minute>``/``c:<minute>`` fields (minute = unix seconds // 60 of the event)."""
    out: Increments = {}
    for event in batch.events:
        key = keys.counts(event.experiment, event.arm, event.version)
        fields = out.setdefault(key, {})
        minute = int(event.at // 60)
        if isinstance(event, Impression):
            total, per_minute = "impressions", f"i:{minute}"
        else:
            total, per_minute = "clicks", f"c:{minute}"
        fields[total] = fields.get(total, 0) + 1
        fields[per_minute] = fields.get(per_minute, 0) + 1
    return out


def _ints(raw: dict) -> dict[str, int]:
    """A counts hash as read from Redis (bytes or str keys and values)."""
    out: dict[str, int] = {}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        with contextlib.suppress(ValueError):
            out[name] = int(value)
    return out


async def add_batch(redis: AsyncClient, keys: FeedbackKeys, batch: EventBatch, maxlen: int) -> str:
    """XADD one batch to the stream, trimmed approximately to ``maxlen`` entries (the web side's
    flush; also what the tests feed the aggregator with). Returns the entry id."""
    entry = await redis.xadd(
        keys.stream, {FIELD: msgspec.json.encode(batch)}, maxlen=maxlen, approximate=True
    )
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def state_url(settings: Settings) -> str | None:
    """The Redis that carries feedback (the state Redis), or None for the file mode: none
    configured, or "auto" with no local Redis answering. An explicitly configured Redis that is
    down is still used (it is retried until it answers), as the batch queue and the cache do."""
    url = settings.state_redis_candidates()
    if url is None:
        return None
    automatic = settings.state_redis_url == AUTO or (
        settings.state_redis_url is None and settings.redis_url == AUTO
    )
    if automatic and not await redisconn.reachable(url):
        return None
    return url


# ---- Redis: the consumer group and the counting script -----------------------------------------
# KEYS: stream, the batch's counted marker, the stats hash, then one counts hash per key.
# ARGV: group, entry id, marker TTL, mode ("count" or "malformed"), then per counts hash: the
# number of its fields, then field/amount pairs.
# Returns 0: not pending any more (another consumer acked it: nothing done); 1: counted;
# 2: a batch already counted (acked, nothing added); 3: malformed (acked, tallied).
COUNT_SCRIPT = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[4] == 'malformed' then
  redis.call('HINCRBY', KEYS[3], 'malformed', 1)
  return 3
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[3])) then
  redis.call('HINCRBY', KEYS[3], 'duplicates', 1)
  return 2
end
local a = 5
for i = 4, #KEYS do
  local n = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[i], ARGV[a], tonumber(ARGV[a + 1]))
    a = a + 2
  end
end
redis.call('HINCRBY', KEYS[3], 'batches', 1)
return 1
"""

COUNTED, NOT_PENDING, DUPLICATE, MALFORMED = 1, 0, 2, 3


@dataclass(frozen=True)
class Backlog:
    """What the aggregators have not counted yet: ``pending`` (delivered, not acknowledged) and
    ``lag`` (in the stream, not delivered yet; None when Redis cannot tell)."""

    pending: int
    lag: int | None


@dataclass
class Tally:
    """This process's outcomes (the stats hash holds every aggregator's)."""

    counted: int = 0
    duplicates: int = 0
    malformed: int = 0
    not_pending: int = 0


def default_consumer() -> str:
    return f"feedback-{socket.gethostname()}-{os.getpid()}"


class RedisAggregator:
    """The stream consumer. ``run`` loops until its stop event is set; every failure of Redis is
    retried with a capped backoff (logged once per outage), and no entry can stop the loop."""

    def __init__(
        self,
        redis: AsyncClient,
        keys: FeedbackKeys,
        *,
        consumer: str | None = None,
        claim_idle: float = 30.0,
        read_count: int = 100,
        block: float = 1.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer or default_consumer()
        self.claim_idle_ms = max(0, int(claim_idle * 1000))
        self.read_count = read_count
        self.block_ms = max(10, int(block * 1000))
        self.tally = Tally()
        self.failed_rounds = 0  # rounds that met a Redis failure (tests, the log)
        self._script: AsyncScript = redis.register_script(COUNT_SCRIPT)
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._last_prune = 0.0

    # ---- reading ------------------------------------------------------------------------
    async def read(self, key: str) -> dict[str, int]:
        """A counts hash. A counts key is read in this install's namespace whatever prefix it
        came with (so a report built with default keys reads the right hash)."""
        if COUNTS_MARK in key:
            key = f"{self.keys.prefix}{COUNTS_MARK}{_local_key(key)}"
        return _ints(await self.redis.hgetall(key))

    async def stats(self) -> dict[str, int]:
        return _ints(await self.redis.hgetall(stats_key(self.keys)))

    async def backlog(self) -> Backlog:
        """From XINFO GROUPS (``lag`` needs Redis 7); no group yet: nothing waits."""
        try:
            groups = await self.redis.xinfo_groups(self.keys.stream)
        except ResponseError:  # no stream yet
            return Backlog(0, 0)
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.keys.group:
                lag = group.get("lag")
                return Backlog(int(group.get("pending") or 0), None if lag is None else int(lag))
        return Backlog(0, await self.redis.xlen(self.keys.stream))

    # ---- the loop -----------------------------------------------------------------------
    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.stream, self.keys.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def run(self, stop: asyncio.Event) -> None:
        backoff, outage = BACKOFF_START, False
        log.info("feedback aggregator started", extra={"consumer": self.consumer})
        while not stop.is_set():
            try:
                await self.step(stop)
                if outage:
                    log.info("feedback aggregator: redis back")
                backoff, outage = BACKOFF_START, False
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:  # NOGROUP: the stream was deleted under us
                log.warning("feedback aggregator: stream error", extra={"error": str(exc)})
                self._group_ready = False
                await _pause(stop, BACKOFF_START)
            except redisconn.FAILURES as exc:
                self.failed_rounds += 1
                if not outage:
                    log.warning(
                        "feedback aggregator: redis unavailable; retrying",
                        extra={"error": f"{type(exc).__name__}: {exc}"},
                    )
                outage = True
                await _pause(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception:  # never let anything end the counting
                log.exception("feedback aggregator: unexpected error; carrying on")
                await _pause(stop, BACKOFF_MAX)
        log.info("feedback aggregator stopped", extra={"consumer": self.consumer})

    async def step(self, stop: asyncio.Event | None = None) -> int:
        """One round: entries idle in dead consumers' hands first, then new ones (waiting up to
        ``block``). Returns how many entries were handled."""
        if not self._group_ready:
            await self.ensure_group()
        await self.prune_consumers()
        handled = await self.claim()
        if handled:
            return handled
        return await self.read_new(stop)

    async def prune_consumers(self) -> None:
        """Forget consumers (aggregators of processes long gone: each process has its own name)
        that hold nothing and have been silent for an hour or more."""
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        threshold = max(3600_000, self.claim_idle_ms * 10)
        for info in await self.redis.xinfo_consumers(self.keys.stream, self.keys.group):
            name = _text(info["name"])
            if name != self.consumer and not info["pending"] and info["idle"] > threshold:
                await self.redis.xgroup_delconsumer(self.keys.stream, self.keys.group, name)

    async def claim(self) -> int:
        """XAUTOCLAIM entries pending longer than the claim idle time (their consumer died or
        froze) and count them here. Entries trimmed from the stream meanwhile are dropped from
        the pending list by Redis itself."""
        reply = await self.redis.xautoclaim(
            self.keys.stream,
            self.keys.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.read_count,
        )
        cursor = reply[0]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        messages = reply[1] if len(reply) > 1 else []
        if messages:
            log.info(
                "feedback aggregator: claimed idle entries",
                extra={"entries": len(messages), "consumer": self.consumer},
            )
        return await self.count(messages)

    async def read_new(self, stop: asyncio.Event | None = None) -> int:
        read = asyncio.ensure_future(
            self.redis.xreadgroup(
                self.keys.group,
                self.consumer,
                {self.keys.stream: ">"},
                count=self.read_count,
                block=self.block_ms,
            )
        )
        if stop is not None:
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({read, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not read.done():  # stopping: what was delivered meanwhile stays pending
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, *redisconn.FAILURES):
                    await read
                return 0
        reply = cast(StreamReply, await read)
        handled = 0
        for _stream, messages in reply or []:
            handled += await self.count(messages)
        return handled

    async def count(self, messages: list[tuple[bytes, dict[bytes, bytes] | None]]) -> int:
        """Run the counting script once per entry, in order (each run is atomic: a worker
        killed between two runs has counted and acknowledged exactly the runs before)."""
        for entry_id, fields in messages:
            keys, args = self._script_call(_text(entry_id), fields)
            result = await self._script(keys=keys, args=args)
            if result == COUNTED:
                self.tally.counted += 1
            elif result == DUPLICATE:
                self.tally.duplicates += 1
            elif result == MALFORMED:
                self.tally.malformed += 1
            else:
                self.tally.not_pending += 1
        return len(messages)

    def _script_call(self, entry_id: str, fields: dict | None) -> tuple[list[str], list]:
        head = [self.keys.stream, "", stats_key(self.keys)]
        args: list = [self.keys.group, entry_id, COUNTED_TTL]
        batch = _parse(entry_id, fields)
        if batch is None:
            head[1] = self.keys.counted(f"entry:{entry_id}")  # same slot; never set
            return head, [*args, "malformed"]
        head[1] = self.keys.counted(batch.id)
        keys, rest = list(head), [*args, "count"]
        for key, amounts in increments(batch, self.keys).items():
            keys.append(key)
            rest.append(len(amounts))
            for field, amount in amounts.items():
                rest.extend((field, amount))
        return keys, rest


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(entry_id: str, fields: dict | None) -> EventBatch | None:
    """The entry's batch, or None (logged) for anything that is not one."""
    raw = None
    if fields:
        raw = fields.get(FIELD, fields.get(FIELD.decode()))
    if raw is None:
        log.warning("feedback: an entry without a batch; dropped", extra={"entry": entry_id})
        return None
    try:
        return _decode_batch(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        log.warning(
            "feedback: a malformed batch; dropped", extra={"entry": entry_id, "error": str(exc)}
        )
        return None


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# ---- no Redis: counts in-process, kept in a file ---------------------------------------------
class _LocalState(msgspec.Struct):
    counts: dict[str, dict[str, int]] = {}
    batches: list[str] = []  # the ids of the last KEEP_BATCHES batches counted


KEEP_BATCHES = 10_000


def _local_key(key: str) -> str:
    """A counts key without its install prefix (the file is the install's own): the part from
    ``:counts:`` on, so a reader may pass any ``FeedbackKeys(...).counts(...)``."""
    at = key.find(COUNTS_MARK)
    return key[at + len(COUNTS_MARK) :] if at >= 0 else key


class LocalCounts:
    """The no-Redis sink and reader: ``add`` applies a batch (once per batch id) and persists
    the counts to ``path`` (temp file + rename, so a crash leaves the old or the new file).

    Other processes sharing the var dir may read: ``read`` reloads the file when it changed on
    disk since this process last wrote or read it. Only one process should ``add`` (the web
    server whose buffer sinks here)."""

    def __init__(self, path: Path, keys: FeedbackKeys | None = None) -> None:
        self.path = Path(path)
        self.keys = keys or FeedbackKeys("local")
        self._state = _LocalState()
        self._seen: set[str] = set()
        self._order: deque[str] = deque()
        self._lock = asyncio.Lock()
        self._mtime: float | None = None
        self._load()

    def _load(self) -> None:
        try:
            stat = self.path.stat()
            state = msgspec.json.decode(self.path.read_bytes(), type=_LocalState)
        except FileNotFoundError:
            return
        except (msgspec.DecodeError, msgspec.ValidationError, OSError) as exc:
            log.error(
                "feedback: the counts file is unreadable; starting from zero",
                extra={"path": str(self.path), "error": str(exc)},
            )
            return
        self._state = state
        self._order = deque(state.batches[-KEEP_BATCHES:])
        self._seen = set(self._order)
        self._mtime = stat.st_mtime

    async def add(self, batch: EventBatch) -> None:
        async with self._lock:
            if batch.id in self._seen:
                return
            self._seen.add(batch.id)
            self._order.append(batch.id)
            while len(self._order) > KEEP_BATCHES:
                self._seen.discard(self._order.popleft())
            for key, amounts in increments(batch, self.keys).items():
                counts = self._state.counts.setdefault(_local_key(key), {})
                for field, amount in amounts.items():
                    counts[field] = counts.get(field, 0) + amount
            self._state.batches = list(self._order)
            data = msgspec.json.encode(self._state)
            await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)
        with contextlib.suppress(OSError):
            self._mtime = self.path.stat().st_mtime

    async def read(self, key: str) -> dict[str, int]:
        with contextlib.suppress(OSError):
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime and not self._lock.locked():
                self._load()
        return dict(self._state.counts.get(_local_key(key), {}))


__all__ = [
    "Backlog",
    "CountsReader",
    "LocalCounts",
    "RedisAggregator",
    "add_batch",
    "increments",
    "state_url",
    "stats_key",
]
