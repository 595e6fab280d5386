"""Token buckets per key (an account name, a client address): how log-in failures are limited.

A bucket holds up to ``capacity`` tokens and gains ``per_second`` of one back; an attempt takes a
token before the password is checked (so a burst of parallel guesses cannot all pass the check
before the first failure is counted) and a correct password gives it back. With no token left the
attempt is refused with how long until the next one (``retry_after``), without checking anything.

The buckets are per process, in memory: see ``services.subscription.accounts`` for why that is
enough. A bucket that has filled up again is the same as no bucket, so those are forgotten first
when the map is full; past ``max_keys`` the least recently used go.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    def __init__(
        self,
        capacity: int,
        per_second: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or per_second <= 0:
            raise ValueError("a bucket needs a capacity of at least 1 and a positive refill rate")
        self.capacity = float(capacity)
        self.per_second = per_second
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._forget()
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.per_second)
            bucket.updated = now
            self._buckets.move_to_end(key)
        return bucket

    def _forget(self) -> None:
        now = self.clock()
        full = [
            key
            for key, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.per_second >= self.capacity
        ]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def take(self, key: str) -> float:
        """Take a token: 0.0 when one was there, else the seconds until there is one (nothing
        taken)."""
        bucket = self._bucket(key, self.clock())
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second

    def give_back(self, key: str) -> None:
        """Return a token taken for an attempt that turned out not to count (a right password)."""
        bucket = self._bucket(key, self.clock())
        bucket.tokens = min(self.capacity, bucket.tokens + 1.0)

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> int:
    """Whole seconds for a Retry-After header: never 0 while the wait is not over."""
    return max(1, math.ceil(seconds))
