from pathlib import Path

import pytest

from services.platform.settings import Settings


def test_env_vars_with_the_prefix_are_parsed_into_typed_fields(tmp_path: Path):
    settings = Settings.from_env(
        {
            "MARQUEE_WEB_PORT": "9000",
            "MARQUEE_PAGE_BUDGET": "0.75",
            "MARQUEE_RECOMMENDER_URLS": "http://127.0.0.1:1, http://127.0.0.1:2",
            "MARQUEE_ACCESS_LOG": "false",
            "MARQUEE_VAR_DIR": str(tmp_path),
        }
    )
    assert settings.web_port == 9000
    assert settings.page_budget == 0.75
    assert settings.recommender_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert settings.access_log is False
    assert settings.model_dir == tmp_path / "models"


def test_a_bad_number_names_the_variable(tmp_path: Path):
    with pytest.raises(ValueError, match="MARQUEE_WEB_PORT"):
        Settings.from_env({"MARQUEE_WEB_PORT": "eighty", "MARQUEE_VAR_DIR": str(tmp_path)})


def test_unset_secrets_are_made_once_and_shared_by_every_process(tmp_path: Path):
    first = Settings.from_env({"MARQUEE_VAR_DIR": str(tmp_path)})
    second = Settings.from_env({"MARQUEE_VAR_DIR": str(tmp_path)})
    assert first.secret_key and first.secret_key == second.secret_key
    assert first.service_token != first.admin_token
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0


def test_explicit_secrets_win(tmp_path: Path):
    settings = Settings.from_env({"MARQUEE_VAR_DIR": str(tmp_path), "MARQUEE_ADMIN_TOKEN": "given"})
    assert settings.admin_token == "given"


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().web_port = 1  # type: ignore[misc]


def test_redis_url_auto_off_and_explicit():
    assert Settings(redis_url="auto").redis_candidates() == "redis://127.0.0.1:6379/0"
    assert Settings(redis_url="").redis_candidates() is None
    assert Settings(redis_url="redis://127.0.0.1:1/0").redis_candidates() == "redis://127.0.0.1:1/0"
