"""A real ``python -m recommender worker`` frozen (SIGSTOP) while it holds feedback it has read
but not acknowledged, then killed (SIGKILL): a second worker claims those entries, and the
counts end exactly right: nothing lost, nothing counted twice."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import msgspec
import redis

from services.feedback.schemas import EventBatch, FeedbackKeys
from tests.experiments.conftest import MakeBatch
from tests.support import PYTHON, Process, marquee_env, wait_until

NAMESPACE = "killtest"
KEYS = FeedbackKeys(NAMESPACE)
CONTROL = KEYS.counts("e1", "control", "v1")


def worker(tmp_path: Path, redis_url: str, name: str) -> Process:
    env = marquee_env(
        redis_url=redis_url,
        redis_namespace=NAMESPACE,
        var_dir=tmp_path / "var",
        model_dir=tmp_path / "no-models",  # the batch loop waits; only the aggregator reads
        feedback_claim_idle=1.0,
    )
    return Process([PYTHON, "-m", "recommender", "worker"], env, tmp_path / f"{name}.log").start()


def consumer_of(process: Process) -> str:
    return f"feedback-{socket.gethostname()}-{process.pid}"


def blocked_reader(client: redis.Redis) -> bool:
    """Some client waits in XREADGROUP (the only one here: the feedback aggregator)."""
    return any(
        c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in client.client_list()
    )


def pending_of(client: redis.Redis, consumer: str) -> int:
    summary = client.xpending(KEYS.stream, KEYS.group)
    return sum(int(c["pending"]) for c in summary.get("consumers") or [] if c["name"] == consumer)


def add_all(client: redis.Redis, batches: list[EventBatch]) -> None:
    """In one transaction: a blocked reader is served them together, as one delivery."""
    with client.pipeline(transaction=True) as pipe:
        for batch in batches:
            pipe.xadd(KEYS.stream, {"b": batch_json(batch)}, maxlen=20_000, approximate=True)
        pipe.execute()


def batch_json(batch: EventBatch) -> bytes:
    return msgspec.json.encode(batch)


def counts(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(CONTROL).items()}


def test_a_worker_killed_mid_aggregation_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, redis_url: str, make_batch: MakeBatch
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    text = redis.Redis.from_url(redis_url, decode_responses=True)
    first = worker(tmp_path, redis_url, "first")
    second: Process | None = None
    sent: list[EventBatch] = []
    try:
        held = 0
        for _attempt in range(10):  # the freeze may land between two reads: then try again
            wait_until(lambda: blocked_reader(text), 30, "the first worker to wait for feedback")
            first.signal(signal.SIGSTOP)
            batches = [make_batch(impressions=2, clicks=1) for _ in range(50)]
            add_all(client, batches)
            sent += batches
            held = pending_of(text, consumer_of(first))
            if held:
                break
            first.signal(signal.SIGCONT)
        assert held > 0, "the first worker never held read-but-unacknowledged entries"
        later = [make_batch(impressions=2, clicks=1) for _ in range(30)]
        add_all(client, later)  # delivered to nobody while the first worker is frozen
        add_all(client, [later[0]])  # a retried XADD of a batch: must count once
        sent += later
        first.kill()  # SIGKILL, still frozen: what it held is pending and idle

        second = worker(tmp_path, redis_url, "second")

        def drained() -> bool:
            groups = text.xinfo_groups(KEYS.stream)
            return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0

        wait_until(drained, 60, "the second worker to claim and count everything")
        assert counts(client)["impressions"] == 2 * len(sent)
        assert counts(client)["clicks"] == len(sent)
        stats = {k.decode(): int(v) for k, v in client.hgetall(f"{KEYS.prefix}:aggregator").items()}
        assert stats["batches"] == len(sent) and stats["duplicates"] == 1
        assert "claimed idle entries" in second.log_tail(200)
    finally:
        first.kill()
        if second is not None:
            assert second.stop() in (0, -15), second.log_tail()
        client.close()
        text.close()
