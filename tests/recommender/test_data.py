"""Loading every MovieLens ratings format, histories for predict, and the movies' metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recommender.data import (
    Interactions,
    data_hash,
    estimate_rows,
    find_catalog,
    load_catalog,
    load_histories,
    load_ratings,
)

ROWS = slice(0, 500)


def test_load_csv(ml_interactions: Interactions) -> None:
    assert len(ml_interactions) == 100_836
    assert ml_interactions.user_ids.dtype == np.int64
    assert ml_interactions.item_ids.dtype == np.int64
    assert ml_interactions.ratings.dtype == np.float32
    assert ml_interactions.timestamps.dtype == np.int64
    assert (ml_interactions.user_ids[0], ml_interactions.item_ids[0]) == (1, 1)
    assert ml_interactions.ratings[0] == 4.0 and ml_interactions.timestamps[0] == 964982703
    assert len(np.unique(ml_interactions.user_ids)) == 610


def _lines(ml: Interactions, sep: str) -> str:
    rows = zip(
        ml.user_ids[ROWS], ml.item_ids[ROWS], ml.ratings[ROWS], ml.timestamps[ROWS], strict=True
    )
    return "".join(f"{u}{sep}{m}{sep}{r:g}{sep}{t}\n" for u, m, r, t in rows)


@pytest.mark.parametrize(("name", "sep"), [("ratings.dat", "::"), ("u.data", "\t")])
def test_dat_and_u_data_match_csv(
    tmp_path: Path, ml_interactions: Interactions, name: str, sep: str
) -> None:
    path = tmp_path / name
    path.write_text(_lines(ml_interactions, sep))
    loaded = load_ratings(path)
    for field in ("user_ids", "item_ids", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(ml_interactions, field)[ROWS])
    assert data_hash(path) == data_hash(path) and len(data_hash(path)) == 64


def test_dat_parsing_does_not_depend_on_block_boundaries(
    tmp_path: Path, ml_interactions: Interactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'::' is turned into ',' on the fly; a '::' split between two reads must survive."""
    import recommender.data as data

    monkeypatch.setattr(data, "BLOCK_BYTES", 4096)
    path = tmp_path / "ratings.dat"
    path.write_text(_lines(ml_interactions, "::") * 20)
    loaded = load_ratings(path)
    assert len(loaded) == 20 * 500
    np.testing.assert_array_equal(loaded.item_ids[-500:], ml_interactions.item_ids[ROWS])


def test_parquet_matches_csv(tmp_path: Path, ml_interactions: Interactions) -> None:
    path = tmp_path / "ratings.parquet"
    table = pa.table(
        {
            "userId": ml_interactions.user_ids,
            "movieId": ml_interactions.item_ids,
            "rating": ml_interactions.ratings,
            "timestamp": ml_interactions.timestamps,
        }
    )
    pq.write_table(table, path)
    loaded = load_ratings(path)
    np.testing.assert_array_equal(loaded.item_ids, ml_interactions.item_ids)
    np.testing.assert_array_equal(loaded.ratings, ml_interactions.ratings)
    assert estimate_rows(path) == len(ml_interactions)


def test_estimated_rows_are_close(ml_ratings_path: Path) -> None:
    assert 0.8 * 100_836 < estimate_rows(ml_ratings_path) < 1.2 * 100_836


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("userId,movieId,rating,timestamp\r\n1,2,3.5,100\r\n1,3,oops,101\r\n", "line 3"),
        ("userId,movieId,rating,timestamp\n1,2,3.5,100\n1,3,4\n", "line 3: expected 4 fields"),
        ("1::2::3::100\n2::3::4::5::6\n", "line 2"),
        ("1::2::3::100\n2::3.5::4::5\n", "line 2"),
        ("1\t2\t3\t100\n1\tx\t3\t100\n", "line 2"),
        ("name,title\nfoo,bar\n", "line 1"),
        ("", "empty"),
        ("userId,movieId,rating,timestamp\n", "no ratings rows"),
        ("userId,movieId\n1,2\n", "line 1: expected header"),
    ],
)
def test_malformed_ratings(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_ratings(path)


def test_histories_take_optional_rating_and_timestamp(tmp_path: Path) -> None:
    bare = tmp_path / "bare.csv"
    bare.write_text("user_id,movie_id\n7,3\n7,1\n8,2\n")
    h = load_histories(bare)
    assert h.user_ids.tolist() == [7, 7, 8] and h.item_ids.tolist() == [3, 1, 2]
    assert np.isnan(h.ratings).all()  # no rating: a like
    assert h.timestamps.tolist() == [0, 1, 2]  # no timestamp: row order

    rated = tmp_path / "rated.csv"
    rated.write_text("7,3,2.5\n7,1,5\n")  # header-less, three columns
    h = load_histories(rated)
    assert h.ratings.tolist() == [2.5, 5.0] and h.timestamps.tolist() == [0, 1]

    reordered = tmp_path / "reordered.csv"
    reordered.write_text("timestamp,movieId,userId,rating\n50,3,7,4\n10,1,7,1\n")
    h = load_histories(reordered)
    assert h.item_ids.tolist() == [3, 1] and h.timestamps.tolist() == [50, 10]
    assert h.ratings.tolist() == [4.0, 1.0]


def test_catalog_has_movies_genres_and_tags(ml_ratings_path: Path) -> None:
    path = find_catalog(ml_ratings_path)
    assert path is not None and path.name == "movies.csv"
    catalog = load_catalog(path)
    assert len(catalog) == 9742
    i = int(np.searchsorted(catalog.movie_ids, 1))
    assert catalog.titles[i] == "Toy Story (1995)"
    assert "Animation" in catalog.genres[i]
    assert "pixar" in [t.lower() for t in catalog.tags[i]]


def test_catalog_reads_ml_1m_and_ml_100k_formats(tmp_path: Path) -> None:
    dat = tmp_path / "movies.dat"
    dat.write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n".encode("latin-1"))
    assert load_catalog(dat).genres == [["Animation", "Children's", "Comedy"]]
    flags = "|".join(["0"] * 3 + ["1"] + ["0"] * 15)
    item = tmp_path / "u.item"
    item.write_bytes(f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n".encode("latin-1"))
    catalog = load_catalog(item)
    assert catalog.titles == ["Toy Story (1995)"] and catalog.genres == [["Animation"]]
