"""The feedback contract: one typed schema per payload and one name per Redis key, shared by the
web server (which shows rows and follows clicks), the recommender (which serves each arm's
version and reports the experiment) and the aggregator (which counts).

Counting rules (so online CTR is a binomial proportion a 95 % interval fits):

- one **impression** per shown similar row (one page view), whatever its length;
- a **click** is the first follow of a link in that row; a page view counts at most one click.
  A second follow of the same link is a replay (refused, 409); a follow of another link in the
  same row redirects but adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

Arm = Literal["control", "candidate"]
ARMS: tuple[Arm, ...] = ("control", "candidate")
Share = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]


class Experiment(msgspec.Struct, frozen=True):
    """The running (or last) experiment. A subject is in the candidate arm when
    ``assignment.bucket(salt, subject) < share``; ``salt`` is fixed at start, so a subject keeps
    its arm for the experiment's life, across requests, replicas and restarts."""

    id: str
    control: str  # model version
    candidate: str  # model version
    share: Share  # of subjects in the candidate arm
    salt: str
    started: str  # ISO 8601, UTC
    stopped: str | None = None  # set by stop/promote; a stopped experiment assigns nobody

    def version(self, arm: Arm) -> str:
        return self.control if arm == "control" else self.candidate


class ShownRow(msgspec.Struct, frozen=True, array_like=True):
    """What one page view showed in its similar row: the payload of the signed token each of
    the row's links carries (``/r/<token>/<movie id>``)."""

    view: str  # page-view id, random
    version: str  # model version that made the row
    experiment: str | None
    arm: Arm | None
    movies: list[int]  # in the order shown; position = index + 1
    issued: int  # unix seconds; tokens older than settings.feedback_token_ttl are refused (410)


class Impression(msgspec.Struct, frozen=True, tag="impression"):
    view: str
    version: str
    experiment: str | None
    arm: Arm | None
    movies: list[int]
    at: float  # unix seconds


class Click(msgspec.Struct, frozen=True, tag="click"):
    view: str
    version: str
    experiment: str | None
    arm: Arm | None
    movie: int
    position: int  # 1-based
    at: float


Event = Impression | Click


class EventBatch(msgspec.Struct, frozen=True):
    """One stream entry: the events one process buffered for one flush. ``id`` (random) makes a
    retried XADD of the same batch countable once."""

    id: str
    events: list[Event]


class Interval(msgspec.Struct, frozen=True):
    estimate: float
    low: float  # 95 %
    high: float


class ArmPoint(msgspec.Struct, frozen=True):
    """Counts of one arm in one minute (the dashboard's CTR-over-time chart)."""

    minute: int  # unix seconds // 60
    impressions: int
    clicks: int


class ArmReport(msgspec.Struct, frozen=True):
    arm: Arm
    version: str
    impressions: int
    clicks: int
    ctr: Interval  # Wilson score interval
    series: list[ArmPoint]


class ExperimentReport(msgspec.Struct, frozen=True):
    """``GET /v1/experiments/current`` (admin token), ``experiment status``, the dashboard."""

    experiment: Experiment
    arms: list[ArmReport]  # control, candidate
    difference: Interval  # candidate CTR - control CTR, Newcombe's hybrid score interval


@dataclass(frozen=True)
class FeedbackKeys:
    """Redis names, under one hash tag so the aggregator's Lua script touches one slot."""

    namespace: str

    @property
    def prefix(self) -> str:
        return f"marquee:{{{self.namespace}:feedback}}"

    @property
    def stream(self) -> str:
        """XADD ... MAXLEN ~ settings.feedback_stream_max; field ``b`` = an EventBatch (JSON)."""
        return f"{self.prefix}:events"

    group = "aggregators"  # the consumer group that counts

    @property
    def experiment(self) -> str:
        """The current Experiment (JSON); absent = none ever started."""
        return f"{self.prefix}:experiment"

    def counts(self, experiment: str | None, arm: Arm | None, version: str) -> str:
        """Hash: ``impressions``, ``clicks``, and per minute ``i:<minute>``, ``c:<minute>``."""
        return f"{self.prefix}:counts:{experiment or '-'}:{arm or '-'}:{version}"

    def followed(self, view: str) -> str:
        """Set of the movies a view's visitor followed (TTL = token TTL): replays and the
        one-click-per-view rule."""
        return f"{self.prefix}:followed:{view}"

    def counted(self, batch_id: str) -> str:
        """Marks a batch as counted (TTL a day): a re-added batch adds nothing."""
        return f"{self.prefix}:counted:{batch_id}"
