"""Fixtures of the experiment tests: events and batches, two registered model versions."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from services.feedback.schemas import Arm, Click, EventBatch, Impression

AT = 1_765_000_000.0  # a fixed instant: minute 29_416_666
MINUTE = int(AT // 60)

MakeBatch = Callable[..., EventBatch]


def impression(
    version: str, arm: Arm | None = "control", experiment: str | None = "e1", at: float = AT
) -> Impression:
    return Impression(uuid.uuid4().hex, version, experiment, arm, [1, 2, 3], at)


def click(
    version: str, arm: Arm | None = "control", experiment: str | None = "e1", at: float = AT
) -> Click:
    return Click(uuid.uuid4().hex, version, experiment, arm, 2, 2, at)


@pytest.fixture
def make_batch() -> MakeBatch:
    """``make_batch(impressions=3, clicks=1, version="v1", arm="control")``: a batch of that
    many events with a fresh random id."""

    def make(
        impressions: int = 1,
        clicks: int = 0,
        version: str = "v1",
        arm: Arm | None = "control",
        experiment: str | None = "e1",
        at: float = AT,
    ) -> EventBatch:
        events: list[Impression | Click] = [
            impression(version, arm, experiment, at) for _ in range(impressions)
        ]
        events += [click(version, arm, experiment, at) for _ in range(clicks)]
        return EventBatch(uuid.uuid4().hex, events)

    return make
