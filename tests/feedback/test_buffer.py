"""The event buffer on its own: bounded, one batch per flush, the same batch retried."""

from __future__ import annotations

from services.feedback.buffer import EventBuffer
from services.feedback.schemas import EventBatch, Impression
from services.platform.metrics import Metrics


def impression(n: int) -> Impression:
    return Impression(f"view-{n}", "v1", None, None, [1, 2, 3], 1_765_000_000.0 + n)


class FlakySink:
    """Fails the next ``failures`` sends, then takes every batch."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.tried: list[EventBatch] = []
        self.taken: list[EventBatch] = []

    async def __call__(self, batch: EventBatch) -> None:
        self.tried.append(batch)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis is away")
        self.taken.append(batch)


def counter(metrics: Metrics, kind: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "marquee_feedback_events_total", {"kind": kind, "outcome": outcome}
    )
    return value or 0.0


async def test_a_flush_sends_everything_buffered_as_one_batch():
    sink = FlakySink()
    buffer = EventBuffer(sink, capacity=100, interval=3600.0)
    for n in range(7):
        buffer.add(impression(n))
    assert await buffer.flush()
    assert [len(b.events) for b in sink.taken] == [7] and len(buffer) == 0
    assert await buffer.flush() and len(sink.tried) == 1  # nothing new: no call


async def test_a_full_buffer_drops_its_oldest_and_counts_them():
    metrics = Metrics("test")
    sink = FlakySink()
    buffer = EventBuffer(sink, capacity=5, interval=3600.0, metrics=metrics)
    for n in range(8):
        buffer.add(impression(n))
    await buffer.flush()
    assert [e.view for e in sink.taken[0].events] == [f"view-{n}" for n in range(3, 8)]
    assert counter(metrics, "impression", "dropped") == 3
    assert counter(metrics, "impression", "buffered") == 8
    assert counter(metrics, "impression", "flushed") == 5


async def test_a_failed_batch_is_sent_again_with_the_same_id_before_newer_events():
    sink = FlakySink(failures=2)
    buffer = EventBuffer(sink, capacity=100, interval=3600.0)
    buffer.add(impression(1))
    assert not await buffer.flush()
    buffer.add(impression(2))
    assert not await buffer.flush()
    assert await buffer.flush()  # the first batch, at last
    assert await buffer.flush()  # then what came meanwhile
    assert len({b.id for b in sink.tried[:3]}) == 1
    assert [[e.view for e in b.events] for b in sink.taken] == [["view-1"], ["view-2"]]


async def test_a_batch_failing_past_its_retries_is_dropped_and_counted():
    metrics = Metrics("test")
    sink = FlakySink(failures=100)
    buffer = EventBuffer(sink, capacity=100, interval=3600.0, metrics=metrics, retries=3)
    buffer.add(impression(1))
    for _ in range(4):
        assert not await buffer.flush()
    assert await buffer.flush()  # nothing left to send
    assert len(sink.tried) == 4
    assert counter(metrics, "impression", "dropped") == 1


async def test_close_stops_the_flusher_and_flushes_the_rest():
    sink = FlakySink()
    buffer = EventBuffer(sink, capacity=100, interval=3600.0)
    buffer.start()
    buffer.add(impression(1))
    await buffer.close()
    assert [len(b.events) for b in sink.taken] == [1]
