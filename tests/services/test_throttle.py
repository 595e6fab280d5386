"""Token buckets: a burst, then a steady rate; a refund; how long to wait; bounded memory."""

from __future__ import annotations

from services.subscription.throttle import TokenBuckets, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    buckets = TokenBuckets(3, 1 / 60, clock=clock)
    assert [buckets.take("ada") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("ada") == 60.0
    clock.now += 30
    assert buckets.take("ada") == 30.0  # nothing taken while refused
    clock.now += 30
    assert buckets.take("ada") == 0.0
    assert buckets.take("grace") == 0.0  # keys are apart


def test_a_token_given_back_can_be_taken_again_but_never_past_capacity() -> None:
    clock = Clock()
    buckets = TokenBuckets(2, 1 / 60, clock=clock)
    buckets.take("ada")
    buckets.take("ada")
    buckets.give_back("ada")
    assert buckets.take("ada") == 0.0
    for _ in range(5):
        buckets.give_back("grace")
    assert [buckets.take("grace") == 0.0 for _ in range(3)] == [True, True, False]


def test_full_buckets_are_forgotten_first_when_too_many_keys() -> None:
    clock = Clock()
    buckets = TokenBuckets(2, 1 / 60, max_keys=3, clock=clock)
    buckets.take("limited")
    buckets.take("limited")
    for name in ("a", "b", "c", "d"):
        buckets.give_back(name)  # full buckets: the same as none
    assert len(buckets) <= 3
    assert buckets.take("limited") > 0  # the one that matters is still there


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert retry_after_header(0.2) == 1
    assert retry_after_header(59.01) == 60
