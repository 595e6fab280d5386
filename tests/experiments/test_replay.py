"""Issue 16, done when: a replay of held-out users during an experiment between the served model
and a deliberately weaker one (popularity) shows the weaker arm's CTR lower with intervals
apart, as their offline Recall@20 ranks them; and the tool counts the clicks the server counts.

Real parts: the hold-out of the bundled data, both versions trained on its training side by
``python -m recommender train``, the monolith as a process with its own Redis, the experiment
started by ``python -m recommender experiment start``, and ``python -m loadtest --scenario
replay`` as a person runs it. Seeded: the same 150 users, the same pages.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.experiments.conftest import ReplaySetup, run_python
from tests.support import TEST_SECRETS, wait_until

pytestmark = pytest.mark.timeout(1200)  # two trainings and a 150-user replay on a shared box

REPLAY_USERS = 150
SEED = 16
ADMIN = TEST_SECRETS["admin_token"]


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _serves(url: str, arm: str, version: str) -> bool:
    status, body = _get(f"{url}/v1/similar/1?k=5&arm={arm}")
    return status == 200 and body["model_version"] == version


@pytest.fixture(scope="module")
def replay(replay_setup: ReplaySetup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Start the experiment (control: served model, candidate: popularity, share 0.5), wait
    until each arm is served by its version, replay the users; the results JSON."""
    s = replay_setup
    url = s.server.url
    run_python(
        s.env, "-m", "recommender", "experiment", "start",
        "--control", s.served, "--candidate", s.popularity, "--share", "0.5",
    )  # fmt: skip
    wait_until(
        lambda: _serves(url, "control", s.served) and _serves(url, "candidate", s.popularity),
        60,
        "each arm served by its own version",
    )
    out = tmp_path_factory.mktemp("replay-run") / "results.json"
    run_python(
        s.env, "-m", "loadtest", "--base-url", url, "--scenario", "replay",
        "--holdout", str(s.holdout / "holdout.csv"), "--replay-users", str(REPLAY_USERS),
        "--seed", str(SEED), "--users", "4", "--admin-token", ADMIN,
        "--model-dir", str(s.model_dir), "--report-wait", "60s", "--out", str(out),
        "--no-progress",
    )  # fmt: skip
    yield json.loads(out.read_text())
    run_python(s.env, "-m", "recommender", "experiment", "stop")


def _arms(results: dict) -> dict[str, dict]:
    return {a["arm"]: a for a in results["replay"]["arms"]}


def test_every_replayed_user_logged_in_and_browsed_without_an_error(replay: dict) -> None:
    tool = replay["replay"]["tool"]
    assert replay["total"]["error_count"] == 0
    assert tool["users"] == tool["logged_in"] == REPLAY_USERS
    assert tool["rows"] == tool["pages"] > REPLAY_USERS


def test_the_popularity_arm_has_the_lower_ctr_with_intervals_apart(
    replay: dict, replay_setup: ReplaySetup
) -> None:
    arms = _arms(replay)
    served, popularity = arms["control"], arms["candidate"]
    assert (served["version"], popularity["version"]) == (
        replay_setup.served,
        replay_setup.popularity,
    )
    assert popularity["ctr"]["high"] < served["ctr"]["low"]
    assert replay["replay"]["difference"]["high"] < 0


def test_online_ctr_ranks_the_arms_as_offline_recall_does(replay: dict) -> None:
    arms = _arms(replay)
    by_ctr = sorted(arms, key=lambda arm: arms[arm]["ctr"]["estimate"])
    by_recall = sorted(arms, key=lambda arm: arms[arm]["offline"]["recall@20"])
    assert by_ctr == by_recall == ["candidate", "control"]
    assert all("ndcg@20" in a["offline"] for a in arms.values())


def test_the_tools_clicks_are_the_servers(replay: dict) -> None:
    section = replay["replay"]
    assert section["server_caught_up"] is True
    for a in section["arms"]:
        assert a["tool"]["clicks"] == a["clicks"] > 0
    assert section["tool"]["clicks"] == sum(a["clicks"] for a in section["arms"])


def test_every_row_the_tool_saw_is_an_impression_on_the_server(replay: dict) -> None:
    for a in replay["replay"]["arms"]:
        assert a["tool"]["rows"] == a["impressions"]
