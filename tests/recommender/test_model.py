"""The served model: similar lists for every movie, recommendations on every path, fitting."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest

from recommender import ease
from recommender.data import Catalog, Interactions
from recommender.model import SOURCES, ModelParams, SimilarityModel, fit
from tests.recommender.conftest import MOVIES

TOY_STORY, TOY_STORY_2, LION_KING, ALADDIN, SHREK = 1, 3114, 364, 588, 4306
PULP_FICTION, RESERVOIR_DOGS, SE7EN = 296, 1089, 47
HITCHHIKER = 33004


def catalog_ids() -> list[int]:
    with open(MOVIES, newline="", encoding="utf-8") as fh:
        return [int(r["movieId"]) for r in csv.DictReader(fh)]


# ---- similar lists ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("movie_id", "expected_genres"),
    [
        (TOY_STORY, {"Animation", "Children", "Adventure", "Comedy", "Fantasy"}),
        (2571, {"Action", "Sci-Fi", "Thriller"}),  # The Matrix
        (PULP_FICTION, {"Crime", "Thriller", "Drama", "Comedy"}),
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


def test_well_known_lists_still_read_well(ml_model: SimilarityModel) -> None:
    """What a film fan liked about the kNN lists is kept (they stay collaborative)."""
    toy_story = [m for m, _ in ml_model.similar(TOY_STORY, 10)]
    assert toy_story[0] == TOY_STORY_2
    assert {LION_KING, ALADDIN, SHREK} <= set(toy_story)
    pulp = [m for m, _ in ml_model.similar(PULP_FICTION, 10)]
    assert {RESERVOIR_DOGS, SE7EN} <= set(pulp)
    assert ml_model.similar_source_of(TOY_STORY) == "collaborative"


def test_similar_contract(ml_model: SimilarityModel) -> None:
    result = ml_model.similar(2571, 25)
    ids = [m for m, _ in result]
    scores = [s for _, s in result]
    assert 2571 not in ids and len(set(ids)) == len(ids) == 25
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    with pytest.raises(KeyError):
        ml_model.similar(999_999_999)
    assert ml_model.has_item(1) and not ml_model.has_item(999_999_999)


def test_every_catalog_movie_has_similar_movies(ml_model: SimilarityModel) -> None:
    ids = catalog_ids()
    assert len(ids) == 9742
    empty = [m for m in ids if not ml_model.similar(m, 10)]
    assert empty == []
    sources = {ml_model.similar_source_of(m) for m in ids}
    assert sources == {"collaborative", "blend", "content"}


def test_sources_follow_the_number_of_likes(ml_model: SimilarityModel) -> None:
    likes = np.asarray(ml_model.item_likes)
    source = np.asarray(ml_model.similar_source)
    blend_likes = ml_model.params.blend_likes
    assert set(source[likes >= blend_likes]) == {SOURCES.index("collaborative")}
    few = source[(likes > 0) & (likes < blend_likes)]
    # blended, unless a movie has no description to blend with (then its kNN list stays)
    assert set(few) == {SOURCES.index("blend"), SOURCES.index("collaborative")}
    assert (few == SOURCES.index("blend")).mean() > 0.99
    assert set(source[likes == 0]) == {SOURCES.index("content")}


def test_ties_are_broken_by_popularity_not_by_index(ml_model: SimilarityModel) -> None:
    """Equal scores are ordered by how many people rated the movie, for every list."""
    popularity = np.asarray(ml_model.item_popularity)
    table = ml_model.similar_lists
    checked = 0
    for i in range(ml_model.n_items):
        idx, w = table.row(i)
        same = np.flatnonzero(w[1:] == w[:-1])
        for j in same:
            assert popularity[idx[j]] >= popularity[idx[j + 1]], (i, idx[j], idx[j + 1])
            checked += 1
    assert checked > 0  # the data has exact ties; they were looked at


def test_rare_movies_are_not_runs_of_equal_scores(ml_model: SimilarityModel) -> None:
    """The Hitchhiker's Guide to the Galaxy had ranks 3-10 all at 0.429699; lists of movies
    with few likes are blended with content neighbours and ranked by evidence."""
    scores = [s for _, s in ml_model.similar(HITCHHIKER, 10)]
    assert len(set(np.round(scores, 6))) == 10
    likes = np.asarray(ml_model.item_likes)
    rare = ml_model.item_ids[(likes > 0) & (likes < 5)][:200]
    distinct = [len(set(np.round([s for _, s in ml_model.similar(int(m), 10)], 6))) for m in rare]
    assert np.mean(distinct) > 8


# ---- recommendations -------------------------------------------------------------------------


def test_history_answers_exclude_it_and_report_unknown_ids(ml_model: SimilarityModel) -> None:
    history = [TOY_STORY, TOY_STORY_2, 2355, 999_999_999]
    answer = ml_model.recommend_history(history, k=10)
    ids = [m for m, _ in answer.items]
    assert len(ids) == 10 and not set(ids) & set(history)
    assert answer.ignored == [999_999_999] and answer.source == "collaborative"
    assert answer.items == ml_model.recommend_history(history[:3], k=10).items
    with_history = [m for m, _ in ml_model.recommend(history, 50, exclude=False)]
    assert set(with_history) & set(history[:3])


def test_unknown_history_falls_back_to_popular_on_the_model_scale(
    ml_model: SimilarityModel,
) -> None:
    answer = ml_model.recommend_history([999_999_999, 999_999_998], k=5)
    assert answer.source == "fallback" and answer.ignored == [999_999_999, 999_999_998]
    assert answer.items == ml_model.popular(5)
    scores = [s for _, s in answer.items]
    # the popularity prior of the model, not raw counts like 329.0
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[0] <= ml_model.params.popularity_weight
    top = answer.items[0][0]
    assert top not in [m for m, _ in ml_model.popular(3, exclude=[top])]


def test_content_only_history(ml_model: SimilarityModel) -> None:
    unrated = int(ml_model.item_ids[np.asarray(ml_model.item_popularity) == 0][0])
    answer = ml_model.recommend_history([unrated], k=5)
    assert answer.source == "content" and len(answer.items) == 5
    mixed = ml_model.recommend_history([unrated, TOY_STORY], k=5)
    assert mixed.source == "blend"


def _rows_of(ml: Interactions, user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mine = ml.user_ids == user
    return ml.item_ids[mine], ml.ratings[mine], ml.timestamps[mine]


@pytest.mark.parametrize("user", [1, 7, 414, 610])
def test_a_users_rows_give_their_served_recommendations(
    ml_model: SimilarityModel, ml_interactions: Interactions, user: int
) -> None:
    """recommend_history on a user's training rows (any row order) = recommend_user."""
    items, ratings, stamps = _rows_of(ml_interactions, user)
    served = ml_model.recommend_user(user, 20)
    assert ml_model.recommend_history(items, ratings, stamps, k=20).items == served
    shuffled = np.random.default_rng(user).permutation(len(items))
    again = ml_model.recommend_history(items[shuffled], ratings[shuffled], stamps[shuffled], k=20)
    assert again.items == served


def test_ratings_matter(ml_model: SimilarityModel, ml_interactions: Interactions) -> None:
    """Low ratings are EASE input but not likes; dropping them changes the answer."""
    items, ratings, stamps = _rows_of(ml_interactions, 1)
    all_liked = ml_model.recommend_history(items, None, stamps, k=20).items
    assert all_liked != ml_model.recommend_user(1, 20)


def test_batch_scoring_matches_single(ml_model: SimilarityModel) -> None:
    users = ml_model.user_ids[:40]
    rows = np.searchsorted(ml_model.user_ids, users)
    starts, stops = ml_model.user_indptr[rows], ml_model.user_indptr[rows + 1]
    take = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
    indptr = np.concatenate([[0], np.cumsum(stops - starts)])
    top, scores = ml_model.top_items(
        indptr, ml_model.user_items[take], ml_model.user_liked[take], 10, batch=16
    )
    for row, user in enumerate(users):
        single = ml_model.recommend_user(int(user), 10)
        assert ml_model.item_ids[top[row]].tolist() == [m for m, _ in single]
        np.testing.assert_allclose(scores[row], [s for _, s in single])


def test_recommend_user(ml_model: SimilarityModel, ml_interactions: Interactions) -> None:
    assert ml_model.has_user(1) and not ml_model.has_user(999_999)
    with pytest.raises(KeyError):
        ml_model.recommend_user(999_999)
    recs = ml_model.recommend_user(1, 10)
    seen = set(ml_interactions.item_ids[ml_interactions.user_ids == 1].tolist())
    assert len(recs) == 10 and not {m for m, _ in recs} & seen


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
        recency_half_life=0.0,
        min_rating=0.0,
        algorithm="knn",
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
    assert model.similar(10, 10)[0][0] == 20
    assert [m for m, _ in model.similar(60, 10)] == [40, 50]
    np.testing.assert_array_equal(model.item_popularity, [2, 3, 2, 2, 2, 1])
    assert model.algorithm == "knn" and model.ease is None


def test_blocked_fit_is_identical(ml_interactions: Interactions) -> None:
    sample = ml_interactions.subset(ml_interactions.user_ids <= 200)
    params = ModelParams(algorithm="knn")
    whole = fit(sample, params, n_jobs=1)
    blocked = fit(sample, params, n_jobs=2, block_bytes=1 << 16)
    np.testing.assert_array_equal(whole.knn.indptr, blocked.knn.indptr)
    np.testing.assert_array_equal(whole.knn.indices, blocked.knn.indices)
    np.testing.assert_allclose(whole.knn.weights, blocked.knn.weights, rtol=1e-6)


def test_ease_matches_the_textbook_inverse() -> None:
    rng = np.random.default_rng(3)
    import scipy.sparse as sp

    x = sp.csr_matrix((rng.random((200, 300)) < 0.05).astype(np.float32))
    b = ease.weights(x, 20.0)
    g = (x.T @ x).toarray().astype(np.float64) + 20.0 * np.eye(300)
    p = np.linalg.inv(g)
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(b, expected, atol=1e-5)
    pruned = ease.prune(b, 7)
    idx, w = pruned.row(11)
    assert len(idx) == 7 and 11 not in idx.tolist()
    strongest = np.argsort(-np.abs(expected[11]))[:7]
    assert set(idx.tolist()) == set(strongest.tolist())
    # negative weights are kept (they push down what does not go together)
    assert (ease.prune(b, 50).weights < 0).any()


def test_algorithm_is_chosen_by_size(ml_interactions: Interactions) -> None:
    sample = ml_interactions.subset(ml_interactions.user_ids <= 100)
    assert fit(sample, ModelParams()).algorithm == "ease+knn"
    small = fit(sample, ModelParams(dense_max_items=100))
    assert small.algorithm == "knn" and small.ease is None
    assert len(small.recommend_user(1, 10)) == 10


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="weighting"):
        ModelParams(weighting="magic")
    with pytest.raises(ValueError, match="neighbours"):
        ModelParams(neighbours=0)
    with pytest.raises(ValueError, match="algorithm"):
        ModelParams(algorithm="magic")
    with pytest.raises(ValueError, match="ease_l2"):
        ModelParams(ease_l2=0)
    params = ModelParams(neighbours=30)
    assert ModelParams.from_dict(params.to_dict() | {"unknown": 1}) == params
    with pytest.raises(ValueError, match="no interactions"):
        fit(_tiny(), ModelParams(min_rating=5.0))


def test_movies_outside_the_ratings_come_from_the_catalog() -> None:
    catalog = Catalog(
        movie_ids=np.array([10, 20, 30, 40, 50, 60, 70]),
        titles=[f"Film {i} (1999)" for i in range(6)] + ["Unseen (1999)"],
        genres=[["Drama"]] * 3 + [["Comedy"]] * 3 + [["Drama"]],
        tags=[[] for _ in range(7)],
    )
    model = fit(_tiny(), replace(ModelParams(), algorithm="knn", min_rating=0.0), catalog)
    assert model.has_item(70) and model.similar_source_of(70) == "content"
    assert {m for m, _ in model.similar(70, 3)} <= {10, 20, 30}
