"""Model, data loading and offline evaluation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recommender.data import Interactions, data_hash, load_ratings
from recommender.evaluate import (
    REFERENCE_PARAMS,
    Split,
    _eval_histories,
    chronological_split,
    evaluate_params,
    evaluate_popularity,
    format_table,
)
from recommender.model import ModelParams, SimilarityModel, fit

# ---- data ------------------------------------------------------------------------------------


def test_load_csv(ml_interactions: Interactions) -> None:
    assert len(ml_interactions) == 100_836
    assert ml_interactions.user_ids.dtype == np.int64
    assert ml_interactions.item_ids.dtype == np.int64
    assert ml_interactions.ratings.dtype == np.float32
    assert ml_interactions.timestamps.dtype == np.int64
    assert (ml_interactions.user_ids[0], ml_interactions.item_ids[0]) == (1, 1)
    assert ml_interactions.ratings[0] == 4.0 and ml_interactions.timestamps[0] == 964982703
    assert len(np.unique(ml_interactions.user_ids)) == 610


def test_load_dat_matches_csv(tmp_path: Path, ml_interactions: Interactions) -> None:
    rows = slice(0, 500)
    lines = [
        f"{u}::{m}::{int(r) if r == int(r) else r}::{t}"
        for u, m, r, t in zip(
            ml_interactions.user_ids[rows],
            ml_interactions.item_ids[rows],
            ml_interactions.ratings[rows],
            ml_interactions.timestamps[rows],
            strict=True,
        )
    ]
    path = tmp_path / "ratings.dat"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_ratings(path)
    for name in ("user_ids", "item_ids", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(ml_interactions, name)[rows])
    assert data_hash(path) == data_hash(path) and len(data_hash(path)) == 64


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("userId,movieId,rating,timestamp\r\n1,2,3.5,100\r\n1,3,oops,101\r\n", "line 3"),
        ("userId,movieId,rating,timestamp\n1,2,3.5,100\n1,3,4\n", "line 3: expected 4 fields"),
        ("1::2::3::100\n2::3::4::5::6\n", "line 2"),
        ("1::2::3::100\n2::3.5::4::5\n", "line 2"),
        ("name,title\nfoo,bar\n", "line 1"),
        ("", "empty"),
        ("userId,movieId,rating,timestamp\n", "no ratings rows"),
    ],
)
def test_malformed_ratings(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_ratings(path)


# ---- similar lists make sense ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("movie_id", "expected_genres"),
    [
        (1, {"Animation", "Children", "Adventure", "Comedy", "Fantasy"}),  # Toy Story
        (2571, {"Action", "Sci-Fi", "Thriller"}),  # The Matrix
        (296, {"Crime", "Thriller", "Drama", "Comedy"}),  # Pulp Fiction
        (1196, {"Action", "Adventure", "Sci-Fi"}),  # Star Wars V
    ],
)
def test_similar_share_genres(
    ml_model: SimilarityModel,
    ml_genres: dict[int, set[str]],
    movie_id: int,
    expected_genres: set[str],
) -> None:
    similar = ml_model.similar(movie_id, 10)
    assert len(similar) == 10
    sharing = [m for m, _ in similar if ml_genres[m] & expected_genres]
    assert len(sharing) >= 7, [(m, ml_genres[m]) for m, _ in similar]


def test_toy_story_neighbours_are_family_films(
    ml_model: SimilarityModel, ml_genres: dict[int, set[str]]
) -> None:
    similar = [m for m, _ in ml_model.similar(1, 10)]
    assert 3114 in similar  # Toy Story 2
    family = [m for m in similar if ml_genres[m] & {"Animation", "Children"}]
    assert len(family) >= 4, [(m, ml_genres[m]) for m in similar]


def test_similar_contract(ml_model: SimilarityModel) -> None:
    result = ml_model.similar(2571, 25)
    ids = [m for m, _ in result]
    scores = [s for _, s in result]
    assert 2571 not in ids and len(set(ids)) == len(ids) == 25
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    with pytest.raises(KeyError):
        ml_model.similar(999_999_999)
    assert ml_model.has_item(1) and not ml_model.has_item(999_999_999)
    many = ml_model.similar_many([1, 999_999_999, 296], 3)
    assert set(many) == {1, 296} and many[1] == ml_model.similar(1, 3)


# ---- recommendations -------------------------------------------------------------------------


def test_recommend_excludes_history_and_ignores_unknown(ml_model: SimilarityModel) -> None:
    history = [1, 3114, 2355, 999_999_999]
    recs = ml_model.recommend(history, 10)
    ids = [m for m, _ in recs]
    assert len(ids) == 10 and not set(ids) & set(history)
    assert ids == [m for m, _ in ml_model.recommend(history[:3], 10)]
    with_history = [m for m, _ in ml_model.recommend(history, 50, exclude=False)]
    assert set(with_history) & set(history[:3])


def test_recommend_falls_back_to_popular(ml_model: SimilarityModel) -> None:
    assert ml_model.recommend([], 5) == ml_model.popular(5)
    assert ml_model.recommend([999_999_999], 5) == ml_model.popular(5)
    top = ml_model.popular(3)
    assert [c for _, c in top] == sorted((c for _, c in top), reverse=True)
    assert top[0][0] not in [m for m, _ in ml_model.popular(3, exclude=[top[0][0]])]


def test_recommend_user(ml_model: SimilarityModel, ml_interactions: Interactions) -> None:
    assert ml_model.has_user(1) and not ml_model.has_user(999_999)
    with pytest.raises(KeyError):
        ml_model.recommend_user(999_999)
    recs = ml_model.recommend_user(1, 10)
    seen = set(ml_interactions.item_ids[ml_interactions.user_ids == 1].tolist())
    assert len(recs) == 10 and not {m for m, _ in recs} & seen
    # scores come from the liked part of the stored (chronological) history; everything the
    # user rated is excluded
    start, stop = ml_model.user_indptr[0], ml_model.user_indptr[1]
    rated = np.asarray(ml_model.user_items[start:stop])
    liked = rated[np.asarray(ml_model.user_positive[start:stop])]
    assert 0 < len(liked) < len(rated)
    seen_ids = set(ml_model.item_ids[rated].tolist())
    from_history = [
        (m, s)
        for m, s in ml_model.recommend(ml_model.item_ids[liked].tolist(), 60)
        if m not in seen_ids
    ]
    assert from_history[:10] == recs


def test_batch_scoring_matches_single(ml_model: SimilarityModel) -> None:
    """Evaluation scores users in batches; it must rank like the served single-user path."""
    users = ml_model.user_ids[:40]
    split = Split(
        train=_tiny(),
        users=users,
        test_indptr=np.zeros(41, np.int64),
        test_items=np.empty(0, np.int64),
    )
    liked, seen = _eval_histories(ml_model, split)
    batch = ml_model.recommend_batch(liked, 10, exclude=seen)
    for row, user in enumerate(users):
        single = [m for m, _ in ml_model.recommend_user(int(user), 10)]
        assert ml_model.item_ids[batch[row]].tolist()[:8] == single[:8]


# ---- fitting ---------------------------------------------------------------------------------


def _tiny() -> Interactions:
    # users 0-2 like items 10/20/30, users 3-4 like 40/50; item 60 is seen by one user only
    pairs = [
        (0, 10),
        (0, 20),
        (0, 30),
        (1, 10),
        (1, 20),
        (2, 20),
        (2, 30),
        (3, 40),
        (3, 50),
        (4, 40),
        (4, 50),
        (4, 60),
    ]
    users, items = zip(*pairs, strict=True)
    return Interactions.from_arrays(
        np.array(users), np.array(items), timestamps=np.arange(len(pairs))
    )


def test_fit_matches_dense_cosine() -> None:
    params = ModelParams(
        weighting="none",
        similarity="cosine",
        alpha=0.5,
        shrinkage=0.0,
        neighbours=5,
        popularity_damping=0.0,
        recency_half_life=0.0,
        min_rating=0.0,
    )
    model = fit(_tiny(), params)
    x = np.zeros((5, 6))
    for u, i in zip(_tiny().user_ids, _tiny().item_ids, strict=True):
        x[u, i // 10 - 1] = 1
    norms = np.sqrt((x**2).sum(axis=0))
    cos = (x.T @ x) / np.outer(norms, norms)
    for i, movie in enumerate(model.item_ids):
        expected = sorted(
            (
                (float(cos[i, j]), int(model.item_ids[j]))
                for j in range(6)
                if j != i and cos[i, j] > 0
            ),
            reverse=True,
        )
        got = model.similar(int(movie), 10)
        assert [s for s, _ in expected] == pytest.approx([s for _, s in got], rel=1e-5)
        assert {m for _, m in expected} == {m for m, _ in got}
    assert model.neighbours.shape == (6, 5) and model.neighbours.dtype == np.int32
    assert model.similar(10, 10)[0][0] == 20
    assert [m for m, _ in model.similar(60, 10)] == [40, 50]  # padding dropped
    np.testing.assert_array_equal(model.item_popularity, [2, 3, 2, 2, 2, 1])


def test_blocked_fit_is_identical(ml_interactions: Interactions) -> None:
    sample = ml_interactions.subset(ml_interactions.user_ids <= 200)
    whole = fit(sample, ModelParams(), n_jobs=1)
    blocked = fit(sample, ModelParams(), n_jobs=2, block_bytes=1 << 16)
    np.testing.assert_array_equal(whole.neighbours[:, :20], blocked.neighbours[:, :20])
    np.testing.assert_allclose(whole.scores, blocked.scores, rtol=1e-6)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="weighting"):
        ModelParams(weighting="magic")
    with pytest.raises(ValueError, match="neighbours"):
        ModelParams(neighbours=0)
    params = ModelParams(neighbours=30)
    assert ModelParams.from_dict(params.to_dict() | {"unknown": 1}) == params
    with pytest.raises(ValueError, match="no interactions"):
        fit(_tiny(), ModelParams(min_rating=5.0))


# ---- evaluation ------------------------------------------------------------------------------


def test_split_is_chronological(ml_interactions: Interactions) -> None:
    split = chronological_split(ml_interactions)
    assert len(split.users) > 500
    train = split.train
    for row in range(0, len(split.users), 97):
        user = split.users[row]
        test = split.test_items[split.test_indptr[row] : split.test_indptr[row + 1]]
        mine = ml_interactions.user_ids == user
        positives = (ml_interactions.ratings >= 4) & mine
        assert len(test) == int(np.ceil(positives.sum() * 0.2))
        test_times = ml_interactions.timestamps[mine & np.isin(ml_interactions.item_ids, test)]
        train_mine = train.user_ids == user
        assert not np.isin(train.item_ids[train_mine], test).any()
        assert train.timestamps[train_mine].max() <= test_times.min()


def test_ours_beats_popularity_and_reference(ml_interactions: Interactions) -> None:
    split = chronological_split(ml_interactions)
    ours = evaluate_params(split, ModelParams())
    popularity = evaluate_popularity(split)
    reference = evaluate_params(split, REFERENCE_PARAMS)
    assert ours["recall@10"] >= 1.4 * popularity["recall@10"]
    assert ours["ndcg@10"] >= 1.25 * popularity["ndcg@10"]
    assert ours["coverage@10"] >= 5 * popularity["coverage@10"]
    assert ours["recall@10"] >= reference["recall@10"]
    assert ours["ndcg@10"] >= reference["ndcg@10"]
    # without recency weighting, the similarity alone is still on par with the reference
    plain = evaluate_params(split, replace(ModelParams(), recency_half_life=0.0))
    assert plain["recall@10"] >= 0.95 * reference["recall@10"]
    table = format_table({"models": {"ours": ours, "popularity": popularity}})
    assert table.count("\n") == 3 and "| ours |" in table
