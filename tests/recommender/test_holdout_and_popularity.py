"""``python -m recommender holdout`` (training ratings + held-out users, no leak between them)
and the popularity model version (``train --algorithm popularity``), for replayed users."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from recommender.cli import main
from recommender.data import Interactions
from recommender.evaluate import (
    holdout_split,
    popularity_peer,
    ranking_metrics,
    recommend_with_model,
)
from recommender.model import ModelParams, fit
from recommender.registry import ModelRegistry


@pytest.fixture(scope="module")
def holdout_dir(tmp_path_factory: pytest.TempPathFactory, ml_ratings_path: Path) -> Path:
    out = tmp_path_factory.mktemp("holdout")
    assert main(["holdout", "--ratings", str(ml_ratings_path), "--out-dir", str(out)]) == 0
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_training_file_holds_no_held_out_rating(holdout_dir: Path) -> None:
    training = {(r["userId"], r["movieId"]) for r in _rows(holdout_dir / "ratings.csv")}
    held = [r for r in _rows(holdout_dir / "holdout.csv") if r["part"] == "heldout"]
    assert held and not {(r["user_id"], r["movie_id"]) for r in held} & training


def test_no_training_rating_of_a_held_out_user_is_after_their_first_held_out_one(
    holdout_dir: Path,
) -> None:
    first_held: dict[str, int] = {}
    for r in _rows(holdout_dir / "holdout.csv"):
        if r["part"] == "heldout":
            stamp = int(r["timestamp"])
            first_held[r["user_id"]] = min(stamp, first_held.get(r["user_id"], stamp))
    last_trained: dict[str, int] = defaultdict(int)
    for r in _rows(holdout_dir / "ratings.csv"):
        if r["userId"] in first_held:
            last_trained[r["userId"]] = max(last_trained[r["userId"]], int(r["timestamp"]))
    assert all(last_trained[user] <= first_held[user] for user in first_held)


def test_a_held_out_users_history_is_their_training_rows(holdout_dir: Path) -> None:
    history: dict[str, list[str]] = defaultdict(list)
    for r in _rows(holdout_dir / "holdout.csv"):
        if r["part"] == "history":
            history[r["user_id"]].append(r["movie_id"])
    trained: dict[str, list[str]] = defaultdict(list)
    for r in _rows(holdout_dir / "ratings.csv"):
        if r["userId"] in history:
            trained[r["userId"]].append(r["movieId"])
    assert {u: sorted(m) for u, m in history.items()} == {u: sorted(m) for u, m in trained.items()}


def test_the_split_is_described_and_the_catalog_sits_next_to_the_training_file(
    holdout_dir: Path,
) -> None:
    split = json.loads((holdout_dir / "split.json").read_text())
    assert split["protocol"] == "strict" and split["eval_users"] == 603
    assert split["train_rows"] == len(_rows(holdout_dir / "ratings.csv"))
    assert (holdout_dir / "movies.csv").is_file() and (holdout_dir / "tags.csv").is_file()


def test_a_holdout_never_overwrites_its_source(tmp_path: Path) -> None:
    source = tmp_path / "ratings.csv"
    source.write_text("userId,movieId,rating,timestamp\n1,1,5,1\n")
    assert main(["holdout", "--ratings", str(source), "--out-dir", str(tmp_path)]) == 2
    assert source.read_text() == "userId,movieId,rating,timestamp\n1,1,5,1\n"


# ---- the popularity model ----------------------------------------------------------------------
def test_a_popularity_models_similar_lists_are_the_most_rated_other_movies() -> None:
    interactions = Interactions.from_arrays(
        [1, 1, 1, 2, 2, 3, 3, 4], [10, 20, 30, 10, 20, 10, 40, 10], [5, 4, 3, 5, 4, 5, 2, 4]
    )
    model = fit(interactions, ModelParams(algorithm="popularity"))
    assert [m for m, _ in model.similar(20, 3)] == [10, 30, 40]
    assert [m for m, _ in model.similar(10, 3)] == [20, 30, 40]
    assert model.similar_source_of(10) == "popularity" and model.algorithm == "popularity"


def test_a_popularity_model_recommends_what_the_popularity_peer_does(
    ml_interactions: Interactions,
) -> None:
    split = holdout_split(ml_interactions, "strict")
    model = fit(split.train, ModelParams(algorithm="popularity"))
    ours = ranking_metrics(split, recommend_with_model(model, split, 20), model.n_items)
    peer = popularity_peer().fit(split.train, {})({})(split, 20)
    assert ours == ranking_metrics(split, peer, model.n_items)


def test_train_registers_a_popularity_version_with_offline_metrics(
    holdout_dir: Path, tmp_path: Path
) -> None:
    args = ["train", "--ratings", str(holdout_dir / "ratings.csv"), "--model-dir", str(tmp_path)]
    assert main([*args, "--algorithm", "popularity", "--quiet"]) == 0
    registry = ModelRegistry(tmp_path)
    model, manifest = registry.load()
    assert manifest.algorithm == "popularity" and manifest.n_items == 9742
    assert {"recall@20", "ndcg@20", "recall@10", "ndcg@10"} <= set(manifest.metrics)
    assert manifest.metrics["recall@20"] == manifest.metrics["popularity_recall@20"]
    top = np.argsort(-np.asarray(model.item_popularity), kind="stable")[:3]
    assert [m for m, _ in model.similar(1, 3)] == [int(m) for m in model.item_ids[top] if m != 1][
        :3
    ]
