"""The feedback events a process has made and not yet handed on: a bounded in-process buffer,
flushed every ``settings.feedback_flush_interval`` seconds as ONE ``EventBatch`` per flush.

Why a buffer: the movie page is the hot path, and a Redis round trip per page (an XADD per
impression) would cost more than the rest of the page. Events go into a deque (an append, no
I/O); a background task sends what has gathered, one stream entry per flush.

Delivery: a batch whose sending failed is kept and sent again, the SAME batch (same id), on the
next flush, before anything newer: the aggregator counts a batch id once, so a retry that
follows a write that did land adds nothing. It is retried ``retries`` times, then dropped
(counted): memory stays bounded whatever the sink does. Meanwhile new events gather in the
deque, which drops its oldest when full (counted too). On shutdown the flusher is stopped by an
event (never by cancelling a wait: Python 3.11's ``wait_for`` can swallow a cancellation) and
makes a last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from services.feedback.schemas import Event, EventBatch, Impression
from services.platform.metrics import Metrics

log = logging.getLogger("marquee.feedback")

Sink = Callable[[EventBatch], Awaitable[None]]
RETRIES = 20  # flushes a failed batch is tried again before it is dropped (~2 s at 100 ms)


def _kind(event: Event) -> str:
    return "impression" if isinstance(event, Impression) else "click"


class EventBuffer:
    def __init__(
        self,
        sink: Sink,
        *,
        capacity: int,
        interval: float,
        metrics: Metrics | None = None,
        retries: int = RETRIES,
    ) -> None:
        self.sink = sink
        self.interval = interval
        self.retries = retries
        self._events: deque[Event] = deque(maxlen=capacity)
        self._pending: EventBatch | None = None  # a batch whose sending failed
        self._attempts = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Counted in plain ints on the hot path; added to the Prometheus counters per flush.
        self._buffered = {"impression": 0, "click": 0}
        self._dropped = {"impression": 0, "click": 0}
        self._counters: dict[tuple[str, str], Counter] = {}
        if metrics is not None:
            for kind in ("impression", "click"):
                for outcome in ("buffered", "flushed", "dropped"):
                    self._counters[kind, outcome] = metrics.feedback_events.labels(kind, outcome)

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: Event) -> None:
        """Buffer one event (no I/O). A full buffer drops its oldest event."""
        events = self._events
        if len(events) == events.maxlen:
            self._dropped[_kind(events[0])] += 1
        events.append(event)
        self._buffered[_kind(event)] += 1

    async def flush(self) -> bool:
        """Send the failed batch again, if any, then one batch of what has gathered. False when
        a send failed (the batch is kept for the next flush)."""
        try:
            if self._pending is None and self._events:
                events = list(self._events)
                self._events.clear()
                self._pending = EventBatch(os.urandom(12).hex(), events)
                self._attempts = 0
            if self._pending is None:
                return True
            batch = self._pending
            try:
                await self.sink(batch)
            except Exception as exc:  # noqa: BLE001 - any sink failure: keep, retry, bound
                self._attempts += 1
                if self._attempts > self.retries:
                    log.warning(
                        "feedback batch dropped",
                        extra={"batch": batch.id, "events": len(batch.events), "error": str(exc)},
                    )
                    self._count(batch, "dropped")
                    self._pending = None
                return False
            self._pending = None
            self._count(batch, "flushed")  # what gathered meanwhile goes at the next flush
            return True
        finally:
            self._publish()

    def _count(self, batch: EventBatch, outcome: str) -> None:
        if not self._counters:
            return
        counts = {"impression": 0, "click": 0}
        for event in batch.events:
            counts[_kind(event)] += 1
        for kind, n in counts.items():
            if n:
                self._counters[kind, outcome].inc(n)

    def _publish(self) -> None:
        if not self._counters:
            return
        for kind in ("impression", "click"):
            if self._buffered[kind]:
                self._counters[kind, "buffered"].inc(self._buffered[kind])
                self._buffered[kind] = 0
            if self._dropped[kind]:
                self._counters[kind, "dropped"].inc(self._dropped[kind])
                self._dropped[kind] = 0

    # ---- the background flusher --------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
            if self._stop.is_set():
                break
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - the flusher must outlive any one flush
                log.exception("feedback flush failed")

    async def close(self) -> None:
        """Stop the flusher (by its event) and flush what is left: the failed batch, then the
        rest, each tried once more."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        for _ in range(2):
            if self._pending is None and not self._events:
                break
            if not await self.flush():
                break
        self._publish()
