"""Where the current experiment lives: one key in the state Redis, which every replica reads, or a
file in the var dir when there is no Redis (one process, or processes sharing a disk). Readers
keep what they read for ``refresh`` seconds, so the per-page cost is a clock read; a start, stop
or promote reaches every process within that."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import msgspec

from recommender.redisconn import FAILURES, AsyncClient
from services.feedback.schemas import Experiment, FeedbackKeys

_decode = msgspec.json.Decoder(Experiment).decode


class ExperimentStore:
    def __init__(
        self,
        redis: AsyncClient | None,
        keys: FeedbackKeys,
        path: Path,
        refresh: float = 2.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._path = path
        self._refresh = refresh
        self._known: Experiment | None = None
        self._read_at = float("-inf")

    async def current(self) -> Experiment | None:
        """The experiment as last read (re-read after ``refresh`` s). When Redis fails, the last
        known one stands: a blip neither starts nor stops an experiment."""
        now = time.monotonic()
        if now - self._read_at >= self._refresh:
            self._read_at = now
            with contextlib.suppress(*FAILURES):
                self._known = await self._read()
        return self._known

    async def save(self, experiment: Experiment) -> None:
        """Write it for every reader (and for this one at once)."""
        data = msgspec.json.encode(experiment)
        if self._redis is not None:
            await self._redis.set(self._keys.experiment, data)
        else:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self._path)
        self._known, self._read_at = experiment, time.monotonic()

    async def _read(self) -> Experiment | None:
        if self._redis is not None:
            data = await self._redis.get(self._keys.experiment)
            return _decode(data) if data else None
        try:
            return _decode(self._path.read_bytes())
        except FileNotFoundError:
            return None
