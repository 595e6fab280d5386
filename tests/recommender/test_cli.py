"""``python -m recommender``: train into a temp registry, predict/similar CSVs, bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recommender.cli import main
from recommender.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, ml_ratings_path: Path) -> Path:
    """One real `python -m recommender train` run (evaluation included) into a temp registry."""
    model_dir = tmp_path_factory.mktemp("models")
    env = {k: v for k, v in os.environ.items() if k != "MARQUEE_MODEL_SIGNING_KEY"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "recommender",
            "train",
            "--ratings",
            str(ml_ratings_path),
            "--model-dir",
            str(model_dir),
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    version = proc.stdout.strip()
    assert ModelRegistry(model_dir).current_version() == version
    manifest = ModelRegistry(model_dir).manifest(version)
    assert manifest.metrics["recall@20"] > manifest.metrics["popularity_recall@20"]
    assert manifest.metrics["eval_users"] > 500
    assert manifest.algorithm == "ease+knn" and manifest.training["content"] is True
    assert manifest.training["peak_rss_mb"] > 0 and "peak memory" in proc.stderr
    assert "| ours |" in proc.stderr
    return model_dir


def _read(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_predict(trained: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("user_id,movie_id\n7,1\n7,3114\n8,2571\n9,999999999\n")
    out = tmp_path / "out.csv"
    assert (
        main(
            [
                "predict",
                "--model-dir",
                str(trained),
                "--users",
                str(users),
                "--k",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = _read(out)
    assert rows[0] == ["user_id", "rank", "movie_id", "score"]
    body = rows[1:]
    assert len(body) == 15
    assert [r[1] for r in body[:5]] == ["1", "2", "3", "4", "5"]
    recs7 = {int(r[2]) for r in body if r[0] == "7"}
    assert len(recs7) == 5 and not recs7 & {1, 3114}
    assert all(float(r[3]) >= 0 for r in body)


def test_similar(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    movies = tmp_path / "movies.csv"
    movies.write_text("movie_id\n1\n2571\n424242424\n")  # header optional; unknown id skipped
    out = tmp_path / "similar.csv"
    assert (
        main(
            [
                "similar",
                "--model-dir",
                str(trained),
                "--movies",
                str(movies),
                "--k",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = _read(out)
    assert rows[0] == ["movie_id", "rank", "similar_movie_id", "score"]
    assert [(r[0], r[1]) for r in rows[1:]] == [
        ("1", "1"),
        ("1", "2"),
        ("1", "3"),
        ("2571", "1"),
        ("2571", "2"),
        ("2571", "3"),
    ]
    assert "424242424" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user_id,movie_id\n1,2\n1,abc\n", "line 3"),
        ("1,2\n1,2,3\n", "line 2"),
        ("user_id,movie_id\n", "no user_id,movie_id rows"),
    ],
)
def test_predict_bad_input(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    users = tmp_path / "users.csv"
    users.write_text(content)
    code = main(
        [
            "predict",
            "--model-dir",
            str(trained),
            "--users",
            str(users),
            "--out",
            str(tmp_path / "o.csv"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and str(users) in err
    assert not (tmp_path / "o.csv").exists()


def test_similar_bad_input_and_missing_file(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    movies = tmp_path / "m.csv"
    movies.write_text("1\n2\nthree\n")
    assert (
        main(
            [
                "similar",
                "--model-dir",
                str(trained),
                "--movies",
                str(movies),
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 2
    )
    assert "line 3" in capsys.readouterr().err
    assert (
        main(
            [
                "similar",
                "--model-dir",
                str(trained),
                "--movies",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "similar",
                "--model-dir",
                str(trained),
                "--movies",
                str(movies),
                "--k",
                "0",
                "--out",
                "x",
            ]
        )
    assert exc.value.code == 2


def test_list_publish_rollback(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    model_dir = tmp_path / "models"
    shutil.copytree(trained, model_dir)
    registry = ModelRegistry(model_dir)
    first = registry.current_version()
    model, manifest = registry.load()
    second = registry.register(
        model, data_hash=manifest.data_hash, metrics={}, trained_seconds=0.0, publish=False
    ).version

    assert main(["publish", second, "--model-dir", str(model_dir)]) == 0
    assert capsys.readouterr().out.strip() == second
    assert main(["list", "--model-dir", str(model_dir)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == f"registry: {model_dir.resolve()}"
    assert listing[1].split()[:2] == ["version", "created"]
    assert [line for line in listing if line.startswith("* ")][0].split()[1] == second
    assert main(["rollback", "--model-dir", str(model_dir)]) == 0
    assert capsys.readouterr().out.strip() == first
    assert main(["publish", "20990101T000000Z-00000000", "--model-dir", str(model_dir)]) == 1
    assert "unknown model version" in capsys.readouterr().err


def test_train_refuses_to_start_over_its_memory_limit(
    tmp_path: Path, ml_ratings_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "m"
    args = ["train", "--ratings", str(ml_ratings_path), "--model-dir", str(model_dir)]
    assert main([*args, "--max-memory", "64M"]) == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "64M" not in err and "0.06 GiB" in err
    assert ModelRegistry(model_dir).manifests() == []


def test_bad_ratings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,2,x,3\n")
    assert main(["train", "--ratings", str(ratings), "--model-dir", str(tmp_path / "m")]) == 2
    assert "line 2" in capsys.readouterr().err


def test_the_cli_finds_the_servers_registry_from_any_directory(tmp_path: Path) -> None:
    """Issue 17: run from elsewhere, `train` published into ./var/models while the servers read
    the project's var/models; both now resolve the registry from the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARQUEE_")}
    env["MARQUEE_VAR_DIR"] = str(tmp_path / "install")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "recommender", "list"],
        cwd=elsewhere,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path / "install" / "models") in proc.stdout + proc.stderr
    assert not (elsewhere / "var").exists()
