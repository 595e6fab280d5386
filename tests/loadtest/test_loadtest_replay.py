"""Replayed users (``--scenario replay --holdout FILE``): the file, the page parsing, the click
rule, a replay against a fake of the feedback routes, and the online-vs-offline report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtest.config import ConfigError
from loadtest.holdout import (
    HeldOutUser,
    choose_click,
    pages_to_open,
    read_holdout,
    select_users,
    similar_links,
)
from loadtest.online import replay_table
from loadtest.runner import run_load
from recommender.data import Interactions
from recommender.evaluate import holdout_split, write_holdout
from services.feedback.assignment import arm_for
from services.feedback.schemas import Experiment
from tests.loadtest.conftest import FEEDBACK, FeedbackLog, fake_feedback_app, movie_page_html

EXPERIMENT = {
    "id": "exp-1",
    "control": "v-control",
    "candidate": "v-candidate",
    "share": 0.5,
    "salt": "salt-1",
    "started": "2026-12-07T08:00:00Z",
}


def _report(log: FeedbackLog) -> dict:
    """The experiment's report from what the fake server saw (arms by the real rule)."""
    experiment = Experiment(**EXPERIMENT)  # type: ignore[arg-type]

    def count(events: list[tuple[str, int]], arm: str) -> int:
        return sum(1 for user, _ in events if arm_for(experiment, f"user:{user}") == arm)

    arms = []
    for arm in ("control", "candidate"):
        impressions, clicks = count(log.views, arm), count(log.clicks, arm)
        estimate = clicks / impressions if impressions else 0.0
        arms.append(
            {
                "arm": arm,
                "version": EXPERIMENT[arm],
                "impressions": impressions,
                "clicks": clicks,
                "ctr": {"estimate": estimate, "low": 0.0, "high": 1.0},
                "series": [],
            }
        )
    return {
        "experiment": EXPERIMENT,
        "arms": arms,
        "difference": {"estimate": 0.01, "low": -0.1, "high": 0.1},
    }


def _holdout_file(path: Path, users: dict[int, tuple[list[int], list[int]]]) -> Path:
    """users: id -> (history movies oldest first, all rated 5; held-out positives)."""
    lines = ["user_id,movie_id,rating,timestamp,part"]
    for user, (history, positives) in users.items():
        lines += [f"{user},{m},5,{1000 + i},history" for i, m in enumerate(history)]
        lines += [f"{user},{m},4.5,{9000 + i},heldout" for i, m in enumerate(positives)]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- the page ----------------------------------------------------------------------------------
def test_similar_links_are_the_similar_rows_tracked_links_in_order():
    html = movie_page_html(5, "tok.sig", [7, 9, 8]).encode()
    assert similar_links(html) == [("/r/tok.sig/7", 7), ("/r/tok.sig/9", 9), ("/r/tok.sig/8", 8)]


def test_a_page_without_a_similar_row_has_no_links():
    assert similar_links(b"<html><main><a href='/r/x/3'>x</a></main></html>") == []


# ---- the click rule ----------------------------------------------------------------------------
def test_the_click_is_the_first_shown_positive_not_followed_yet():
    links = [("/r/t/1", 1), ("/r/t/2", 2), ("/r/t/3", 3)]
    assert choose_click(links, frozenset({2, 3}), set()) == ("/r/t/2", 2)
    assert choose_click(links, frozenset({2, 3}), {2}) == ("/r/t/3", 3)


def test_no_click_when_no_unfollowed_positive_is_shown():
    links = [("/r/t/1", 1), ("/r/t/2", 2)]
    assert choose_click(links, frozenset({5}), set()) is None
    assert choose_click(links, frozenset({2}), {2}) is None


# ---- the file and the choices ------------------------------------------------------------------
def test_pages_are_the_most_recent_likes_first_then_the_rest():
    user = HeldOutUser(1, (10, 11, 12, 13, 11), (5.0, 2.0, 4.0, 3.0, 4.5), frozenset({99}))
    assert pages_to_open(user, 10) == [11, 12, 10, 13]
    assert pages_to_open(user, 2) == [11, 12]


def test_the_holdout_file_the_evaluation_writes_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    interactions = Interactions.from_arrays(
        rng.integers(1, 21, n), rng.integers(1, 80, n), rng.choice([3.0, 4.0, 5.0], n),
        np.arange(n),
    )  # fmt: skip
    split = holdout_split(interactions, "strict")
    write_holdout(split, tmp_path / "holdout.csv")
    users = read_holdout(tmp_path / "holdout.csv")
    assert [u.user for u in users] == split.users.tolist()
    for row, user in enumerate(users):
        held = split.test_items[split.test_indptr[row] : split.test_indptr[row + 1]]
        assert user.positives == frozenset(held.tolist())
        mine = split.train.user_ids == user.user
        assert sorted(user.history) == sorted(split.train.item_ids[mine].tolist())


def test_a_malformed_holdout_line_is_named(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("user_id,movie_id,rating,timestamp,part\n1,2,5,3,history\n1,x,5,3,heldout\n")
    with pytest.raises(ValueError, match="h.csv:3"):
        read_holdout(path)


def test_the_users_replayed_are_a_seeded_sample():
    users = [HeldOutUser(i, (1,), (5.0,), frozenset({2})) for i in range(1, 50)]
    first = [u.user for u in select_users(users, 10, seed=3)]
    assert first == [u.user for u in select_users(users, 10, seed=3)]
    assert first != [u.user for u in select_users(users, 10, seed=4)]


# ---- configuration -----------------------------------------------------------------------------
def test_the_replay_scenario_needs_a_holdout_file(config):
    with pytest.raises(ConfigError, match="--holdout"):
        config(scenario="replay")


def test_a_replay_is_the_whole_load(config, tmp_path):
    path = _holdout_file(tmp_path / "h.csv", {1: ([1], [2])})
    with pytest.raises(ConfigError, match="--mix"):
        config(holdout=str(path), mix={"page": 1.0})


def test_the_admin_token_is_never_written_to_the_results(config, tmp_path):
    path = _holdout_file(tmp_path / "h.csv", {1: ([1], [2])})
    cfg = config(scenario="replay", holdout=str(path), admin_token="admin-token")
    assert "admin-token" not in json.dumps(cfg.to_json())


# ---- a replay against the fake feedback routes -------------------------------------------------
async def test_each_positive_is_followed_once_and_one_link_per_page(serve, config, tmp_path):
    app = fake_feedback_app(lambda movie: [10, 11, 12], None)
    url = await serve(app)
    path = _holdout_file(tmp_path / "h.csv", {7: ([1, 2, 3, 4], [12, 11])})
    res = await run_load(config(base_url=url, holdout=str(path), admin_token="x", report_wait=0))
    log = app[FEEDBACK]
    assert res["total"]["error_count"] == 0
    assert log.views == [("7", 4), ("7", 3), ("7", 2), ("7", 1)]
    assert log.clicks == [("7", 11), ("7", 12)] and log.refused == []
    assert res["replay"]["tool"]["clicks"] == 2 and res["replay"]["tool"]["pages"] == 4


async def test_the_tools_clicks_are_the_servers(serve, config, tmp_path):
    app = fake_feedback_app(lambda movie: [movie + 1, movie + 2, movie * 2], None)
    url = await serve(app)
    users = {u: (list(range(u, u + 6)), [u + 3, u * 2 + 2, 500]) for u in range(1, 30)}
    path = _holdout_file(tmp_path / "h.csv", users)
    res = await run_load(config(base_url=url, holdout=str(path), users=4, report_wait=0))
    log = app[FEEDBACK]
    assert res["replay"]["tool"]["clicks"] == len(log.clicks) > 0
    assert log.refused == [] and len(set(log.clicks)) == len(log.clicks)


async def test_a_replay_is_the_same_with_the_same_seed(serve, config, tmp_path):
    users = {u: (list(range(u, u + 5)), [u + 2, u * 3]) for u in range(1, 25)}
    path = _holdout_file(tmp_path / "h.csv", users)
    clicks = []
    for _ in range(2):
        app = fake_feedback_app(lambda movie: [movie + 1, movie * 3, movie + 2], None)
        url = await serve(app)
        await run_load(
            config(base_url=url, holdout=str(path), replay_users=10, users=3, report_wait=0)
        )
        clicks.append(sorted(app[FEEDBACK].clicks))
    assert clicks[0] == clicks[1] and clicks[0]


async def test_the_report_puts_online_ctr_beside_each_versions_offline_metrics(
    serve, config, tmp_path
):
    users = {u: ([1, 2, 3], [11]) for u in range(1, 21)}
    experiment = Experiment(**EXPERIMENT)  # type: ignore[arg-type]
    arms = {u: arm_for(experiment, f"user:{u}") for u in users}
    expected = {arm: sum(1 for a in arms.values() if a == arm) for arm in ("control", "candidate")}
    app = fake_feedback_app(lambda movie: [10, 11], _report)
    url = await serve(app)
    registry = tmp_path / "models"
    for arm, recall in (("control", 0.18), ("candidate", 0.09)):
        folder = registry / "versions" / EXPERIMENT[arm]
        folder.mkdir(parents=True)
        metrics = {"recall@20": recall, "ndcg@20": recall - 0.01}
        (folder / "manifest.json").write_text(json.dumps({"metrics": metrics}))
    path = _holdout_file(tmp_path / "h.csv", users)
    res = await run_load(
        config(
            base_url=url,
            holdout=str(path),
            admin_token="admin-token",
            model_dir=str(registry),
            report_wait=0,
        )
    )
    section = res["replay"]
    by_arm = {a["arm"]: a for a in section["arms"]}
    assert by_arm["control"]["offline"]["recall@20"] == 0.18
    assert by_arm["candidate"]["offline"]["ndcg@20"] == pytest.approx(0.08)
    assert {arm: a["tool"]["clicks"] for arm, a in by_arm.items()} == expected
    assert section["server_caught_up"] is True
    table = replay_table(section)
    assert "v-candidate" in table and "0.1800" in table and "candidate - control" in table


async def test_without_the_admin_token_the_report_says_why(serve, config, tmp_path):
    app = fake_feedback_app(lambda movie: [10, 11], _report)
    url = await serve(app)
    path = _holdout_file(tmp_path / "h.csv", {1: ([1], [11])})
    res = await run_load(config(base_url=url, holdout=str(path), report_wait=0))
    assert "401" in res["replay"]["experiment_error"] and res["replay"]["arms"] == []
    assert "no online figures" in replay_table(res["replay"])


async def test_a_second_replay_in_the_same_experiment_reports_what_it_added(
    serve, config, tmp_path
):
    app = fake_feedback_app(lambda movie: [10, 11], _report)
    url = await serve(app)
    path = _holdout_file(tmp_path / "h.csv", {u: ([1, 2], [11]) for u in range(1, 11)})
    runs = []
    for _ in range(2):
        cfg = config(base_url=url, holdout=str(path), admin_token="admin-token", report_wait=0)
        runs.append((await run_load(cfg))["replay"])
    second = {a["arm"]: a for a in runs[1]["arms"]}
    assert all(a["run"]["clicks"] == a["tool"]["clicks"] for a in second.values())
    assert sum(a["clicks"] for a in second.values()) == 2 * runs[1]["tool"]["clicks"]
    assert runs[1]["server_caught_up"] and "from before this run" in replay_table(runs[1])


async def test_the_html_report_shows_the_arms_online_and_offline(serve, config, tmp_path):
    from loadtest.html_report import render_html

    app = fake_feedback_app(lambda movie: [10, 11], _report)
    url = await serve(app)
    registry = tmp_path / "models"
    folder = registry / "versions" / EXPERIMENT["control"]
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"metrics": {"recall@20": 0.1773}}))
    path = _holdout_file(tmp_path / "h.csv", {u: ([1, 2], [11]) for u in range(1, 11)})
    cfg = config(
        base_url=url,
        holdout=str(path),
        admin_token="admin-token",
        model_dir=str(registry),
        report_wait=0,
    )
    html = render_html(await run_load(cfg))
    assert "Replayed users: online vs offline" in html
    assert "v-control" in html and "v-candidate" in html and "0.1773" in html
