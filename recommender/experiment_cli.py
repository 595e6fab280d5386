"""``python -m recommender experiment start|status|stop|promote``: the A/B test between two model
versions, run from the same settings as the servers (the experiment lives in the state Redis,
or in the var dir without one; every web server and box follows it within seconds).

- ``start --control V1 --candidate V2 --share 0.2``: both versions must be registered (and
  verify); one experiment runs at a time. A new salt is drawn, so visitors are assigned afresh.
- ``status [--json]``: per arm impressions, clicks and CTR with its 95 % interval, and the
  difference with its interval (``--json``: the ExperimentReport, as /v1/experiments/current).
- ``stop``: nobody is assigned any more (the published version serves everyone); the counts stay.
- ``promote``: publish the candidate (the registry's publish, announced like ``publish``), then
  stop: the boxes swap to it as to any published version.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from recommender import redisconn
from recommender.registry import IntegrityError, ModelRegistry, RegistryError
from services.feedback.aggregate import CountsReader, LocalCounts, RedisAggregator, state_url
from services.feedback.backend import connect_state, counts_path, experiment_path, keys_of
from services.feedback.report import experiment_report
from services.feedback.schemas import Experiment, ExperimentReport, Interval
from services.feedback.state import ExperimentStore
from services.platform.settings import Settings


class ExperimentError(ValueError):
    """A command that cannot be carried out as asked (the message says why and what to do)."""


@dataclass
class _Opened:
    store: ExperimentStore
    counts: CountsReader
    client: redisconn.AsyncClient | None


async def _open(settings: Settings) -> _Opened:
    keys = keys_of(settings)
    url = await state_url(settings)
    if url is None:
        store = ExperimentStore(None, keys, experiment_path(settings))
        return _Opened(store, LocalCounts(counts_path(settings), keys), None)
    client = connect_state(url)
    try:
        await client.ping()
    except redisconn.FAILURES as exc:
        await client.aclose()
        raise ExperimentError(
            f"the state Redis at {redisconn.describe(url)} does not answer ({exc}); the "
            "experiment lives there, so nothing was changed"
        ) from None
    store = ExperimentStore(client, keys, experiment_path(settings), refresh=0.0)
    return _Opened(store, RedisAggregator(client, keys), client)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _check_version(registry: ModelRegistry, version: str, role: str) -> None:
    try:
        registry.verify(version)
    except RegistryError:
        known = ", ".join(m.version for m in registry.manifests()[-5:]) or "none"
        raise ExperimentError(
            f"--{role} {version!r} is not a registered model version in {registry.model_dir} "
            f"(latest: {known}; see python -m recommender list)"
        ) from None
    except (IntegrityError, OSError) as exc:
        raise ExperimentError(f"--{role} {version}: {exc}") from None


async def _running(store: ExperimentStore) -> Experiment:
    experiment = await store.current()
    if experiment is None or experiment.stopped is not None:
        raise ExperimentError("no experiment is running (python -m recommender experiment start)")
    return experiment


async def start(
    settings: Settings, registry: ModelRegistry, control: str, candidate: str, share: float
) -> Experiment:
    if control == candidate:
        raise ExperimentError("--control and --candidate name the same version")
    if not 0.0 < share < 1.0:
        raise ExperimentError(f"--share must be between 0 and 1 (exclusive), got {share}")
    _check_version(registry, control, "control")
    _check_version(registry, candidate, "candidate")
    opened = await _open(settings)
    try:
        current = await opened.store.current()
        if current is not None and current.stopped is None:
            raise ExperimentError(
                f"experiment {current.id} is running ({current.control} vs {current.candidate}); "
                "stop or promote it first"
            )
        started = _now()
        experiment = Experiment(
            id=f"{started.replace(':', '').replace('-', '')}-{secrets.token_hex(3)}",
            control=control,
            candidate=candidate,
            share=share,
            salt=secrets.token_hex(16),
            started=started,
        )
        await opened.store.save(experiment)
        return experiment
    finally:
        await _close(opened)


async def stop(settings: Settings) -> Experiment:
    opened = await _open(settings)
    try:
        experiment = await _running(opened.store)
        stopped = msgspec.structs.replace(experiment, stopped=_now())
        await opened.store.save(stopped)
        return stopped
    finally:
        await _close(opened)


async def promote(settings: Settings, registry: ModelRegistry) -> Experiment:
    """Publish the candidate, announce it, then stop the experiment. Published first: the
    candidate arm keeps its version throughout, and the control arm moves to it with every
    other visitor when the boxes swap, so no request sees a version that is not loaded."""
    from recommender.cli import _announce

    opened = await _open(settings)
    try:
        experiment = await _running(opened.store)
        registry.publish(experiment.candidate)
        _announce(experiment.candidate)
        stopped = msgspec.structs.replace(experiment, stopped=_now())
        await opened.store.save(stopped)
        return stopped
    finally:
        await _close(opened)


async def report(settings: Settings) -> ExperimentReport:
    opened = await _open(settings)
    try:
        experiment = await opened.store.current()
        if experiment is None:
            raise ExperimentError("no experiment has been started")
        return await experiment_report(experiment, opened.counts.read, keys_of(settings))
    finally:
        await _close(opened)


async def _close(opened: _Opened) -> None:
    if opened.client is not None:
        await opened.client.aclose()


# ---- printing ---------------------------------------------------------------------------------
def _pct(value: float, sign: bool = False) -> str:
    return f"{value * 100:+.2f} %" if sign else f"{value * 100:.2f} %"


def _interval(i: Interval, sign: bool = False) -> str:
    return f"{_pct(i.estimate, sign)} [{_pct(i.low, sign)}, {_pct(i.high, sign)}]"


def format_report(report: ExperimentReport) -> str:
    e = report.experiment
    state = f"stopped {e.stopped}" if e.stopped else "running"
    width = max(len("version"), *(len(a.version) for a in report.arms))
    lines = [
        f"experiment {e.id}: {state} (started {e.started}; {e.share:.0%} of visitors in the "
        "candidate arm)",
        f"{'arm':<10} {'version':<{width}} {'impressions':>11} {'clicks':>8}  CTR [95 % interval]",
    ]
    for a in report.arms:
        lines.append(
            f"{a.arm:<10} {a.version:<{width}} {a.impressions:>11,} {a.clicks:>8,}  "
            f"{_interval(a.ctr)}"
        )
    lines.append(f"difference (candidate - control): {_interval(report.difference, sign=True)}")
    return "\n".join(lines)


def _describe(experiment: Experiment) -> str:
    return (
        f"experiment {experiment.id}: control {experiment.control}, candidate "
        f"{experiment.candidate}, {experiment.share:.0%} of visitors in the candidate arm"
    )


# ---- argparse ---------------------------------------------------------------------------------
def cmd_experiment(args: argparse.Namespace) -> int:
    from recommender.cli import _registry, _settings

    settings = _settings()
    try:
        if args.action == "start":
            registry = _registry(args)
            started = asyncio.run(
                start(settings, registry, args.control, args.candidate, args.share)
            )
            print(f"started {_describe(started)}")
        elif args.action == "stop":
            stopped = asyncio.run(stop(settings))
            print(f"stopped {_describe(stopped)}; the published version serves everyone")
        elif args.action == "promote":
            promoted = asyncio.run(promote(settings, _registry(args)))
            print(f"published {promoted.candidate}; stopped experiment {promoted.id}")
        else:
            result = asyncio.run(report(settings))
            print(msgspec.json.encode(result).decode() if args.json else format_report(result))
    except ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except redisconn.FAILURES as exc:
        print(f"error: the state Redis failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _share(value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0.0 < share < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return share


def add_parser(sub: argparse._SubParsersAction, model_dir_default: Path) -> None:
    p = sub.add_parser(
        "experiment", help="A/B test two model versions: start, status, stop, promote"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="action")

    def model_dir(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--model-dir",
            default=model_dir_default,
            help="model registry directory (env MARQUEE_MODEL_DIR, else var/models)",
        )

    q = actions.add_parser("start", help="serve --candidate to --share of visitors")
    q.add_argument("--control", required=True, help="model version of the control arm")
    q.add_argument("--candidate", required=True, help="model version of the candidate arm")
    q.add_argument("--share", type=_share, default=0.5, help="candidate share (0-1; default 0.5)")
    model_dir(q)
    q = actions.add_parser("status", help="per-arm CTR with 95 % intervals and the difference")
    q.add_argument("--json", action="store_true", help="print the ExperimentReport as JSON")
    actions.add_parser("stop", help="end the experiment; the published version serves everyone")
    q = actions.add_parser("promote", help="publish the candidate, then stop the experiment")
    model_dir(q)
    p.set_defaults(func=cmd_experiment)
