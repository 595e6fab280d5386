"""``python -m recommender experiment start|status|stop|promote`` with the servers' settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from recommender.cli import main
from services.feedback.aggregate import LocalCounts
from services.feedback.backend import counts_path, keys_of
from services.feedback.schemas import ExperimentReport
from services.platform.settings import Settings
from tests.conftest import Versions
from tests.experiments.conftest import MakeBatch


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, versions: Versions) -> str:
    """The CLI's environment: the test's Redis, var dir and registry. Returns the Redis URL."""
    for name, value in {
        "MARQUEE_REDIS_URL": redis_url,
        "MARQUEE_VAR_DIR": str(tmp_path / "var"),
        "MARQUEE_MODEL_DIR": str(versions.models),
    }.items():
        monkeypatch.setenv(name, value)
    return redis_url


@pytest.fixture
def no_redis(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("MARQUEE_REDIS_URL", "")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["experiment", *args])
    out, err = capsys.readouterr()
    return code, out, err


def start(versions: Versions, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run(
        capsys,
        "start",
        "--control",
        versions.control,
        "--candidate",
        versions.candidate,
        "--share",
        "0.2",
    )


def status(capsys: pytest.CaptureFixture[str]) -> ExperimentReport:
    code, out, err = run(capsys, "status", "--json")
    assert code == 0, err
    return msgspec.json.decode(out, type=ExperimentReport)


def test_start_then_status_shows_both_arms(
    env: str, versions: Versions, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = start(versions, capsys)
    assert code == 0, err
    assert "started experiment" in out and "20% of visitors" in out
    report = status(capsys)
    assert report.experiment.stopped is None and report.experiment.share == 0.2
    assert [(a.arm, a.version, a.impressions) for a in report.arms] == [
        ("control", versions.control, 0),
        ("candidate", versions.candidate, 0),
    ]
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "running" in out and versions.candidate in out and "difference" in out


def test_status_table_gives_ctr_with_intervals_and_the_difference(
    no_redis: None, versions: Versions, capsys: pytest.CaptureFixture[str], make_batch: MakeBatch
) -> None:
    assert start(versions, capsys)[0] == 0
    experiment = status(capsys).experiment
    settings = Settings.from_env(need_secrets=False)
    counts = LocalCounts(counts_path(settings), keys_of(settings))

    async def feed() -> None:
        await counts.add(
            make_batch(80, 48, version=versions.control, arm="control", experiment=experiment.id)
        )
        await counts.add(
            make_batch(
                70, 56, version=versions.candidate, arm="candidate", experiment=experiment.id
            )
        )

    asyncio.run(feed())
    code, out, _ = run(capsys, "status")
    assert code == 0
    lines = out.splitlines()
    control = next(line for line in lines if line.startswith("control"))
    candidate = next(line for line in lines if line.startswith("candidate"))
    assert "80" in control and "48" in control and "60.00 % [" in control
    assert "70" in candidate and "56" in candidate and "80.00 % [" in candidate
    # Newcombe 1998, Table II (a): 56/70 - 48/80 = 0.2000 [0.0524, 0.3339]
    assert "difference (candidate - control): +20.00 % [+5.24 %, +33.39 %]" in out


def test_one_experiment_runs_at_a_time(
    env: str, versions: Versions, capsys: pytest.CaptureFixture[str]
) -> None:
    assert start(versions, capsys)[0] == 0
    code, _, err = start(versions, capsys)
    assert code == 1 and "is running" in err and "stop or promote it first" in err


def test_start_refuses_an_unknown_version_and_changes_nothing(
    env: str, versions: Versions, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "start", "--control", versions.control, "--candidate", "20990101T000000Z-nope"
    )
    assert code == 1
    assert "'20990101T000000Z-nope' is not a registered model version" in err
    code, _, err = run(capsys, "status")
    assert code == 1 and "no experiment has been started" in err


def test_start_refuses_a_share_outside_zero_to_one(
    env: str, versions: Versions, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "experiment",
                "start",
                "--control",
                versions.control,
                "--candidate",
                "x",
                "--share",
                "1.5",
            ]
        )
    assert exc.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_start_refuses_the_same_version_twice(
    env: str, versions: Versions, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "start", "--control", versions.control, "--candidate", versions.control
    )
    assert code == 1 and "same version" in err


def test_stop_ends_the_experiment_and_keeps_its_report(
    env: str, versions: Versions, capsys: pytest.CaptureFixture[str]
) -> None:
    assert start(versions, capsys)[0] == 0
    code, out, err = run(capsys, "stop")
    assert code == 0, err
    assert "stopped experiment" in out
    assert status(capsys).experiment.stopped is not None
    code, _, err = run(capsys, "stop")
    assert code == 1 and "no experiment is running" in err


def test_promote_publishes_the_candidate_and_stops(
    env: str, versions: Versions, capsys: pytest.CaptureFixture[str]
) -> None:
    assert start(versions, capsys)[0] == 0
    code, out, err = run(capsys, "promote")
    assert code == 0, err
    assert f"published {versions.candidate}" in out
    assert versions.registry.current_version() == versions.candidate
    assert status(capsys).experiment.stopped is not None
    code, _, err = run(capsys, "promote")
    assert code == 1 and "no experiment is running" in err


def test_without_redis_the_experiment_lives_in_the_var_dir(
    no_redis: None, versions: Versions, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert start(versions, capsys)[0] == 0
    assert (tmp_path / "var" / "feedback" / "experiment.json").is_file()
    assert status(capsys).arms[1].version == versions.candidate


def test_an_explicit_redis_that_is_down_is_a_clear_error(
    env: str,
    versions: Versions,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support import free_port

    monkeypatch.setenv("MARQUEE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    code, _, err = start(versions, capsys)
    assert code == 1 and "does not answer" in err and "nothing was changed" in err


def test_promote_refuses_a_candidate_that_fails_its_check_and_changes_nothing(
    env: str, versions: Versions, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.experiments.conftest import tamper

    assert start(versions, capsys)[0] == 0
    tamper(versions.models, versions.candidate)
    code, _, err = run(capsys, "promote")
    assert code == 1 and "does not match" in err
    assert versions.registry.current_version() == versions.control
    assert status(capsys).experiment.stopped is None
