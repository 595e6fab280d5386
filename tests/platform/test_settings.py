"""Settings: parsed by type from MARQUEE_* variables, checked, documented, and never making up
secrets."""

import re
from pathlib import Path

import pytest

from services.platform.settings import (
    PROJECT_ROOT,
    Settings,
    SettingsError,
    make_dev_secrets,
    table,
)

SECRETS = {
    "MARQUEE_SECRET_KEY": "a-long-random-secret-key-0123",
    "MARQUEE_SERVICE_TOKEN": "a-long-random-service-token-45",
    "MARQUEE_ADMIN_TOKEN": "a-long-random-admin-token-6789",
}


def test_env_vars_with_the_prefix_are_parsed_into_typed_fields(tmp_path: Path):
    settings = Settings.from_env(
        {
            **SECRETS,
            "MARQUEE_WEB_PORT": "9000",
            "MARQUEE_PAGE_BUDGET": "0.75",
            "MARQUEE_RECOMMENDER_URLS": "http://127.0.0.1:1, http://127.0.0.1:2",
            "MARQUEE_ACCESS_LOG": "false",
            "MARQUEE_STATE_REDIS_URL": "",
            "MARQUEE_VAR_DIR": str(tmp_path),
        }
    )
    assert settings.web_port == 9000
    assert settings.page_budget == 0.75
    assert settings.recommender_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert settings.access_log is False
    assert settings.state_redis_url == ""  # set, and empty: no state Redis
    assert settings.model_dir == tmp_path / "models"


@pytest.mark.parametrize(
    ("name", "raw", "reason"),
    [
        ("MARQUEE_WEB_PORT", "eighty", "invalid literal"),
        ("MARQUEE_WEB_PORT", "70000", "between 1 and 65535"),
        ("MARQUEE_ACCESS_LOG", "maybe", "true or false"),
        ("MARQUEE_MODE", "mainframe", "monolith, microservices"),
        ("MARQUEE_WORKERS", "0", "at least 1"),
        ("MARQUEE_PAGE_BUDGET", "-1", "more than 0"),
        ("MARQUEE_CATALOG_URL", "catalog:8081", "not an http(s) URL"),
        ("MARQUEE_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(tmp_path: Path, name, raw, reason):
    with pytest.raises(SettingsError, match=f"{name}=.*{re.escape(reason)}"):
        Settings.from_env({**SECRETS, name: raw, "MARQUEE_VAR_DIR": str(tmp_path)})


def test_missing_secrets_are_refused_not_made_up(tmp_path: Path):
    with pytest.raises(SettingsError, match="MARQUEE_SECRET_KEY, MARQUEE_SERVICE_TOKEN"):
        Settings.from_env({"MARQUEE_VAR_DIR": str(tmp_path)})
    assert not list(tmp_path.iterdir()), "parsing wrote a file"


def test_development_reads_the_secrets_made_by_the_explicit_step(tmp_path: Path):
    env = {"MARQUEE_VAR_DIR": str(tmp_path), "MARQUEE_DEVELOPMENT": "true"}
    with pytest.raises(SettingsError, match="make secrets"):
        Settings.from_env(env)
    path = make_dev_secrets(tmp_path)
    assert path.stat().st_mode & 0o077 == 0
    first, second = Settings.from_env(env), Settings.from_env(env)
    assert first.secret_key and first.secret_key == second.secret_key
    assert first.service_token != first.admin_token
    assert Settings.from_env({**env, "MARQUEE_ADMIN_TOKEN": "given"}).admin_token == "given"


@pytest.mark.parametrize("value", ["replace-me-with-a-long-secret", "CHANGEME-CHANGEME-1", "short"])
def test_placeholder_or_short_secrets_are_refused_outside_development(tmp_path: Path, value):
    env = {**SECRETS, "MARQUEE_SECRET_KEY": value, "MARQUEE_VAR_DIR": str(tmp_path)}
    with pytest.raises(SettingsError, match="MARQUEE_SECRET_KEY"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "MARQUEE_DEVELOPMENT": "true"}).secret_key == value


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().web_port = 1  # type: ignore[misc]


def test_redis_url_auto_off_and_explicit():
    assert Settings(redis_url="auto").redis_candidates() == "redis://127.0.0.1:6379/0"
    assert Settings(redis_url="").redis_candidates() is None
    assert Settings(redis_url="redis://127.0.0.1:1/0").redis_candidates() == "redis://127.0.0.1:1/0"


def test_every_setting_is_documented_and_the_operations_table_is_current():
    text = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    documented = text.split("<!-- settings:begin -->\n")[1].split("<!-- settings:end -->")[0]
    assert documented == table(), "docs/operations.md drifted: paste `... settings table`"
    assert all(line.count("|") == 4 and "|  |" not in line for line in table().splitlines())
