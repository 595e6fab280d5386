"""Evaluation: both hold-out protocols, validation cut from training rows, tuning never on test,
the hold-out file, the cold-movie measurement."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from recommender.data import Interactions, load_catalog, load_histories
from recommender.evaluate import (
    K,
    Peer,
    cold_items,
    ease_peer,
    evaluate_sample,
    format_tables,
    holdout_split,
    objective,
    ours_peer,
    popularity_peer,
    ranking_metrics,
    recommend_with_model,
    tune_and_test,
    validation_split,
    write_holdout,
)
from recommender.model import ModelParams, fit
from tests.recommender.conftest import MOVIES


def _rows(ml: Interactions, user: int) -> Interactions:
    return ml.subset(ml.user_ids == user)


def test_strict_split_is_chronological(ml_interactions: Interactions) -> None:
    split = holdout_split(ml_interactions, "strict")
    assert len(split.users) == 603
    train = split.train
    for row in range(0, len(split.users), 97):
        user = split.users[row]
        test = split.test_items[split.test_indptr[row] : split.test_indptr[row + 1]]
        mine = _rows(ml_interactions, user)
        assert len(test) == int(np.ceil((mine.ratings >= 4).sum() * 0.2))
        test_times = mine.timestamps[np.isin(mine.item_ids, test)]
        train_mine = train.user_ids == user
        assert not np.isin(train.item_ids[train_mine], test).any()
        assert train.timestamps[train_mine].max() <= test_times.min()


def test_standard_split_trains_on_every_other_rating(ml_interactions: Interactions) -> None:
    standard = holdout_split(ml_interactions, "standard")
    strict = holdout_split(ml_interactions, "strict")
    np.testing.assert_array_equal(standard.users, strict.users)
    np.testing.assert_array_equal(standard.test_items, strict.test_items)
    assert len(standard.train) + len(standard.test_items) == len(ml_interactions)
    assert len(strict.train) < len(standard.train)  # later low ratings are hidden only there


def test_validation_is_cut_from_the_training_rows(ml_interactions: Interactions) -> None:
    split = holdout_split(ml_interactions, "strict")
    val = validation_split(split)
    train_keys = set(zip(split.train.user_ids.tolist(), split.train.item_ids.tolist(), strict=True))
    val_train = set(zip(val.train.user_ids.tolist(), val.train.item_ids.tolist(), strict=True))
    assert val_train < train_keys
    users = np.repeat(val.users, np.diff(val.test_indptr))
    assert set(zip(users.tolist(), val.test_items.tolist(), strict=True)) <= train_keys
    test_users = np.repeat(split.users, np.diff(split.test_indptr))
    test_keys = set(zip(test_users.tolist(), split.test_items.tolist(), strict=True))
    assert not test_keys & (
        val_train | set(zip(users.tolist(), val.test_items.tolist(), strict=True))
    )


def test_a_sampled_split_only_holds_out_the_sample(ml_interactions: Interactions) -> None:
    split = holdout_split(ml_interactions, "strict", max_users=50, seed=1)
    assert len(split.users) == 50
    others = ~np.isin(ml_interactions.user_ids, split.users)
    assert int(np.isin(split.train.user_ids, split.users, invert=True).sum()) == int(others.sum())


def _small(ml: Interactions) -> Interactions:
    """200 users and their 600 most rated movies: EASE grids in a second."""
    sub = ml.subset(ml.user_ids <= 200)
    items, counts = np.unique(sub.item_ids, return_counts=True)
    keep = items[np.argsort(-counts, kind="stable")[:600]]
    return sub.subset(np.isin(sub.item_ids, keep))


def test_tuning_chooses_on_validation_and_scores_test_once(ml_interactions: Interactions) -> None:
    split = holdout_split(_small(ml_interactions), "strict")
    grid = (3.0, 300.0, 30_000.0)
    results = tune_and_test(split, [ease_peer(grid), popularity_peer()])
    ease = results["models"]["EASE"]
    val = validation_split(split)
    by_l2 = {}
    for l2 in grid:
        recommend = ease_peer((l2,)).fit(val.train, {"l2": l2})({})
        by_l2[l2] = objective(ranking_metrics(val, recommend(val, K), 600))
    assert ease["params"] == {"l2": max(by_l2, key=by_l2.get)}
    assert ease["grid_points"] == 3 and ease["fit_seconds"] >= 0
    assert objective(ease["validation"]) == pytest.approx(max(by_l2.values()))
    assert results["models"]["popularity"]["test"]["recall@20"] < ease["test"]["recall@20"]
    table = format_tables({"protocols": {"strict": results}})
    assert "| EASE | l2=" in table and "| popularity | - |" in table


def test_scoring_time_parameters_are_tuned_without_refitting(
    ml_interactions: Interactions,
) -> None:
    fits: list[dict] = []
    base = ours_peer("ours", [{}], [{"knn_weight": 0.0}, {"knn_weight": 0.4}], ModelParams())
    counting = Peer(
        "ours", base.grid, lambda train, params: fits.append(params) or base.fit(train, params)
    )
    results = tune_and_test(holdout_split(_small(ml_interactions), "strict"), [counting])
    assert len(fits) == 2  # one fit on validation for both knn weights, one refit on train
    assert results["models"]["ours"]["grid_points"] == 2


def test_holdout_file(ml_interactions: Interactions, tmp_path: Path) -> None:
    split = holdout_split(ml_interactions, "strict")
    path = tmp_path / "holdout.csv"
    n = write_holdout(split, path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    n_history = int(np.isin(split.train.user_ids, split.users).sum())
    assert len(rows) == n == n_history + len(split.test_items)
    held = [r for r in rows if r["part"] == "heldout"]
    assert len(held) == len(split.test_items) and all(float(r["rating"]) >= 4 for r in held)
    # the history part is predict input, and gives the evaluated answer
    history = tmp_path / "history.csv"
    with open(history, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "movie_id", "rating", "timestamp"])
        writer.writerows(
            [r["user_id"], r["movie_id"], r["rating"], r["timestamp"]]
            for r in rows
            if r["part"] == "history" and int(r["user_id"]) in (1, 7)
        )
    loaded = load_histories(history)
    model = fit(split.train, ModelParams())
    recs = recommend_with_model(model, split, 10)
    for user in (1, 7):
        mine = loaded.user_ids == user
        answer = model.recommend_history(
            loaded.item_ids[mine], loaded.ratings[mine], loaded.timestamps[mine], k=10
        )
        row = int(np.searchsorted(split.users, user))
        assert [m for m, _ in answer.items] == recs[row].tolist()


def test_train_evaluates_on_a_sample(ml_interactions: Interactions) -> None:
    result = evaluate_sample(ml_interactions, ModelParams(), max_users=100)
    assert result["split"]["eval_users"] == 100
    ours, popularity = result["models"]["ours"], result["models"]["popularity"]
    assert ours["recall@20"] > popularity["recall@20"]


def test_cold_movies_get_content_then_blended_lists(ml_interactions: Interactions) -> None:
    result = cold_items(
        ml_interactions,
        load_catalog(MOVIES),
        ModelParams(),
        min_likes=100,
        seeds=(4,),
        keep_likes=(3,),
    )
    overlap = result["overlap@10"]
    assert result["sources"] == {"content": "content", "blend, 3 likes kept": "blend"}
    assert set(overlap) == {
        "content",
        "genre-popularity fallback",
        "blend, 3 likes kept",
        "collaborative only, 3 likes kept",
    }
    assert all(0 <= v <= 1 for v in overlap.values())
