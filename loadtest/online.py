"""The replay's report: online CTR per arm (the server's counts) beside each arm's offline
metrics (its version's manifest), and the tool's own counts to check the server's against.

- Online: ``GET /v1/experiments/current`` with the admin token (an ``ExperimentReport``). The
  aggregator counts asynchronously, so the report waits (up to ``wait`` seconds) until the
  server has counted, since the run began (``baseline``), at least the rows and clicks the tool
  saw in each arm.
- Offline: each arm's version's manifest ``metrics`` (Recall@k, NDCG@k of the strict hold-out
  ``train`` evaluates on): from the registry directory when ``--model-dir`` is given, else from
  ``GET /v1/models`` (every loaded version), else ``GET /v1/model`` (the published one).
- The tool's per-arm counts use the experiment's own assignment rule
  (``services.feedback.assignment``, subject ``user:<id>``), so they need nothing from the
  server but the experiment.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from loadtest.holdout import ReplayUsers
from services.feedback.assignment import arm_for
from services.feedback.schemas import ExperimentReport

OFFLINE_KEYS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def _get_json(url: str, token: str | None, timeout: float) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - the user's URL
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except json.JSONDecodeError:
            return exc.code, None


def fetch_experiment(base: str, token: str | None, timeout: float) -> ExperimentReport | str:
    """The current experiment's report, or why there is none (a one-line reason)."""
    try:
        status, body = _get_json(f"{base}/v1/experiments/current", token, timeout)
    except (OSError, json.JSONDecodeError) as exc:
        return f"GET {base}/v1/experiments/current failed: {exc}"
    if status != 200:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        hint = " (give --admin-token or MARQUEE_ADMIN_TOKEN)" if status in (401, 403) else ""
        return f"GET /v1/experiments/current answered {status}: {message or '-'}{hint}"
    try:
        return msgspec.convert(body, ExperimentReport)
    except msgspec.ValidationError as exc:
        return f"GET /v1/experiments/current: not an ExperimentReport ({exc})"


def _metrics(manifest: Any) -> dict[str, float] | None:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("metrics"), dict):
        return None
    metrics = manifest["metrics"]
    return {k: float(metrics[k]) for k in OFFLINE_KEYS if isinstance(metrics.get(k), int | float)}


def _manifests_in(payload: Any) -> list[dict[str, Any]]:
    """Manifests in a ``/v1/models`` or ``/v1/model`` answer, whatever its envelope."""
    if isinstance(payload, dict) and "version" in payload:
        return [payload]
    if isinstance(payload, dict):
        lists = [v for v in payload.values() if isinstance(v, list)]
        payload = lists[0] if lists else []
    if isinstance(payload, list):
        return [m for m in payload if isinstance(m, dict) and "version" in m]
    return []


def offline_metrics(
    versions: list[str], base: str, model_dir: str | None, timeout: float
) -> tuple[dict[str, dict[str, float]], str]:
    """``{version: metrics}`` for ``versions`` and where they were read."""
    found: dict[str, dict[str, float]] = {}
    if model_dir:
        for version in versions:
            path = Path(model_dir) / "versions" / version / "manifest.json"
            try:
                metrics = _metrics(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                continue
            if metrics is not None:
                found[version] = metrics
        return found, f"registry {model_dir}"
    source = "-"
    for route in ("/v1/models", "/v1/model"):
        try:
            status, body = _get_json(base + route, None, timeout)
        except (OSError, json.JSONDecodeError):
            continue
        if status != 200:
            continue
        for manifest in _manifests_in(body):
            metrics = _metrics(manifest)
            if manifest["version"] in versions and metrics is not None:
                found.setdefault(manifest["version"], metrics)
                source = f"GET {route}"
        if len(found) == len(set(versions)):
            break
    return found, source


def tool_counts(replay: ReplayUsers) -> dict[str, int]:
    outcomes = replay.outcomes.values()
    return {
        "users": len(replay.outcomes),
        "logged_in": sum(o.logged_in for o in outcomes),
        "pages": sum(o.pages for o in outcomes),
        "rows": sum(o.rows for o in outcomes),
        "links": sum(o.links for o in outcomes),
        "clicks": sum(len(o.clicks) for o in outcomes),
        "users_who_clicked": sum(bool(o.clicks) for o in outcomes),
        "positives": sum(len(u.positives) for u in replay.users if u.user in replay.outcomes),
    }


def _tool_by_arm(replay: ReplayUsers, report: ExperimentReport) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for outcome in replay.outcomes.values():
        arm = arm_for(report.experiment, f"user:{outcome.user}") or "none"
        row = out.setdefault(arm, {"users": 0, "pages": 0, "rows": 0, "clicks": 0})
        row["users"] += 1
        row["pages"] += outcome.pages
        row["rows"] += outcome.rows
        row["clicks"] += len(outcome.clicks)
    return out


Baseline = dict[str, tuple[int, int]]  # "<experiment id>:<arm>" -> (impressions, clicks)


def baseline(base: str, token: str | None, timeout: float = 5.0) -> Baseline:
    """The server's counts before the replay (none when it has no experiment yet): what the
    run adds is the difference, so a second replay in the same experiment waits for its own
    events to be counted, not for the first run's."""
    report = fetch_experiment(base, token, timeout)
    if isinstance(report, str):
        return {}
    return {f"{report.experiment.id}:{a.arm}": (a.impressions, a.clicks) for a in report.arms}


def _added(report: ExperimentReport, before: Baseline) -> dict[str, tuple[int, int]]:
    """Per arm: (impressions, clicks) the server counted since ``before``."""
    out: dict[str, tuple[int, int]] = {}
    for a in report.arms:
        impressions, clicks = before.get(f"{report.experiment.id}:{a.arm}", (0, 0))
        out[a.arm] = (a.impressions - impressions, a.clicks - clicks)
    return out


def _caught_up(added: dict[str, tuple[int, int]], by_arm: dict[str, dict[str, int]]) -> bool:
    """Has the server counted (at least) every row and click the tool saw, arm by arm?"""
    for arm, (impressions, clicks) in added.items():
        mine = by_arm.get(arm)
        if mine is not None and (clicks < mine["clicks"] or impressions < mine["rows"]):
            return False
    return True


def replay_report(
    replay: ReplayUsers,
    *,
    holdout: str,
    base: str,
    token: str | None,
    model_dir: str | None,
    wait: float,
    before: Baseline | None = None,
    timeout: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The ``replay`` section of the results (JSON-ready)."""
    tool = tool_counts(replay)
    out: dict[str, Any] = {
        "holdout": holdout,
        "pages_per_user": replay.pages_per_user,
        "tool": tool,
        "experiment": None,
        "arms": [],
    }
    deadline = time.monotonic() + wait
    while True:
        report = fetch_experiment(base, token, timeout)
        if isinstance(report, str):
            out["experiment_error"] = report
            return out
        by_arm = _tool_by_arm(replay, report)
        added = _added(report, before or {})
        caught_up = _caught_up(added, by_arm)
        if caught_up or time.monotonic() >= deadline:
            break
        sleep(0.2)  # the aggregator is asynchronous: poll until it caught up, within ``wait``
    versions = [a.version for a in report.arms]
    offline, source = offline_metrics(versions, base, model_dir, timeout)
    out["experiment"] = msgspec.to_builtins(report.experiment)
    out["offline_source"] = source
    out["server_caught_up"] = caught_up
    for a in report.arms:
        mine = by_arm.get(a.arm, {"users": 0, "pages": 0, "rows": 0, "clicks": 0})
        out["arms"].append(
            {
                "arm": a.arm,
                "version": a.version,
                "impressions": a.impressions,
                "clicks": a.clicks,
                "ctr": msgspec.to_builtins(a.ctr),
                "run": {"impressions": added[a.arm][0], "clicks": added[a.arm][1]},
                "tool": mine,
                "offline": offline.get(a.version, {}),
            }
        )
    out["difference"] = msgspec.to_builtins(report.difference)
    return out


def _pct(value: float) -> str:
    return f"{value * 100:.2f} %"


def replay_table(section: dict[str, Any]) -> str:
    """The text report: what the replay did, then online vs offline per arm."""
    tool = section["tool"]
    lines = [
        f"replay of {section['holdout']}: {tool['users']} held-out users "
        f"({tool['logged_in']} logged in), up to {section['pages_per_user']} pages each: "
        f"{tool['pages']} pages, {tool['rows']} similar rows with tracked links, "
        f"{tool['clicks']} clicks followed ({tool['users_who_clicked']} users clicked; "
        f"{tool['positives']} held-out positives in all)"
    ]
    if section.get("experiment_error"):
        lines.append(f"no online figures: {section['experiment_error']}")
        return "\n".join(lines)
    exp = section["experiment"]
    lines.append(
        f"experiment {exp['id']} (candidate share {exp['share']:g}"
        + (f", stopped {exp['stopped']}" if exp.get("stopped") else "")
        + f"); offline metrics from {section.get('offline_source', '-')}"
    )
    earlier = [
        a for a in section["arms"] if a.get("run", {}).get("impressions") != a["impressions"]
    ]
    if earlier:
        lines.append(
            "the server's counts include events from before this run; this run added "
            + ", ".join(
                f"{a['arm']} {a['run']['impressions']} impressions / {a['run']['clicks']} clicks"
                for a in earlier
            )
        )
    if not section.get("server_caught_up", True):
        lines.append("warning: the server had not counted every click the tool made yet")
    head = (
        f"{'arm':<10}{'version':<30}{'impressions':>12}{'clicks':>8}  {'CTR [95 % interval]':<28}"
        f"{'tool rows/clicks':>18}{'Recall@20':>11}{'NDCG@20':>9}"
    )
    lines += [head, "-" * len(head)]
    for a in section["arms"]:
        ctr = a["ctr"]
        interval = f"{_pct(ctr['estimate'])} [{_pct(ctr['low'])}, {_pct(ctr['high'])}]"
        off = a["offline"]
        recall = f"{off['recall@20']:.4f}" if "recall@20" in off else "-"
        ndcg = f"{off['ndcg@20']:.4f}" if "ndcg@20" in off else "-"
        mine = f"{a['tool']['rows']}/{a['tool']['clicks']}"
        lines.append(
            f"{a['arm']:<10}{a['version']:<30}{a['impressions']:>12}{a['clicks']:>8}  "
            f"{interval:<28}{mine:>18}{recall:>11}{ndcg:>9}"
        )
    diff = section.get("difference")
    if diff:
        lines.append(
            f"CTR difference, candidate - control: {_pct(diff['estimate'])} "
            f"[{_pct(diff['low'])}, {_pct(diff['high'])}]"
        )
    return "\n".join(lines)
