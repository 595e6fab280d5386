"""An experiment's report: per arm, the counts of its version and the CTR with its Wilson
interval, the per-minute series (the dashboard's chart), and the candidate-minus-control
difference with Newcombe's interval. Read through any counts reader (Redis or the local file),
so ``GET /v1/experiments/current``, ``experiment status`` and the dashboard show the same
numbers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.feedback.schemas import (
    ARMS,
    Arm,
    ArmPoint,
    ArmReport,
    Experiment,
    ExperimentReport,
    FeedbackKeys,
)
from services.feedback.stats import newcombe, wilson

Read = Callable[[str], Awaitable[dict[str, int]]]


def series(counts: dict[str, int]) -> list[ArmPoint]:
    """The ``i:<minute>`` / ``c:<minute>`` fields as points, oldest first."""
    minutes: dict[int, list[int]] = {}
    for field, value in counts.items():
        kind, _, minute = field.partition(":")
        if kind not in ("i", "c") or not minute.isdigit():
            continue
        point = minutes.setdefault(int(minute), [0, 0])
        point[0 if kind == "i" else 1] += value
    return [ArmPoint(m, i, c) for m, (i, c) in sorted(minutes.items())]


def arm_report(arm: Arm, version: str, counts: dict[str, int]) -> ArmReport:
    impressions = max(0, counts.get("impressions", 0))
    clicks = max(0, counts.get("clicks", 0))
    return ArmReport(arm, version, impressions, clicks, wilson(clicks, impressions), series(counts))


async def experiment_report(
    experiment: Experiment, read: Read, keys: FeedbackKeys | None = None
) -> ExperimentReport:
    """``read`` is a counts reader's ``read``; ``keys`` names the hashes (any namespace does for
    the local file, which ignores the prefix)."""
    keys = keys or FeedbackKeys("local")
    arms = []
    for arm in ARMS:
        version = experiment.version(arm)
        arms.append(arm_report(arm, version, await read(keys.counts(experiment.id, arm, version))))
    control, candidate = arms
    difference = newcombe(
        control.clicks, control.impressions, candidate.clicks, candidate.impressions
    )
    return ExperimentReport(experiment, arms, difference)
