"""compose.yaml: a valid Compose model (checked by Compose itself, no engine needed) wired right."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.deployfiles import (
    ROOT,
    TEST_SECRETS,
    compose_model,
    marquee_services,
    run_compose_config,
    url_host_port,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return compose_model(tmp_path_factory.mktemp("compose"))


@pytest.mark.parametrize("missing", sorted(TEST_SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing: str, tmp_path: Path) -> None:
    """One secret left out at a time: Compose names whichever missing variable it meets first,
    and that order varies between runs when several are missing."""
    given = {name: value for name, value in TEST_SECRETS.items() if name != missing}
    result = run_compose_config(given, tmp_path)
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr, result.stderr


def test_compose_config_resolves_with_secrets(model: dict) -> None:
    services = model["services"]
    assert {"redis", "redis-state", "postgres", "train", "catalog", "worker", "web"} <= set(
        services
    )
    assert not {"prometheus", "grafana"} & set(services)  # only with --profile observability
    for name, service in marquee_services(model).items():
        env = service["environment"]
        assert env["MARQUEE_SECRET_KEY"] == TEST_SECRETS["MARQUEE_SECRET_KEY"], name


def test_only_the_web_server_is_published_and_only_on_loopback(model: dict) -> None:
    published = {n: s["ports"] for n, s in model["services"].items() if s.get("ports")}
    assert set(published) == {"web"}
    (port,) = published["web"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8080", 8080)


def test_recommenders_and_worker_wait_for_a_trained_model(model: dict) -> None:
    services = model["services"]
    recommenders = [
        n
        for n, s in services.items()
        if (s.get("command") or [])[:1] == ["recommender"] and s["command"][1] == "serve"
    ]
    assert len(recommenders) >= 2
    for name in [*recommenders, "worker"]:
        depends = services[name]["depends_on"]
        assert depends["train"]["condition"] == "service_completed_successfully", name
        (mount,) = [v for v in services[name]["volumes"] if v["source"] == "models"]
        assert mount["read_only"] is True, name
    (train_mount,) = [v for v in services["train"]["volumes"] if v["source"] == "models"]
    assert not train_mount.get("read_only")
    assert services["train"]["restart"] == "no"


def test_http_services_have_readiness_healthchecks_and_web_waits_for_them(model: dict) -> None:
    services = model["services"]
    web_depends = services["web"]["depends_on"]
    for name, service in marquee_services(model).items():
        if name in {"train", "worker"}:
            continue
        test = " ".join(service["healthcheck"]["test"])
        assert "/readyz" in test, name
        if name != "web":
            assert web_depends[name]["condition"] == "service_healthy", name


def test_web_runs_as_microservices_and_its_urls_name_compose_services(model: dict) -> None:
    services = model["services"]
    env = services["web"]["environment"]
    assert env["MARQUEE_MODE"] == "microservices"
    urls = [env["MARQUEE_CATALOG_URL"], *env["MARQUEE_SUBSCRIPTION_URL"].split(",")]
    urls += env["MARQUEE_RECOMMENDER_URLS"].split(",")
    for url in urls:
        host, _ = url_host_port(url)
        assert host in services, url
    redis_host, _ = url_host_port(env["MARQUEE_REDIS_URL"])
    assert redis_host in services


def test_containers_are_read_only_and_non_root_friendly(model: dict) -> None:
    for name, service in marquee_services(model).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "/app/var" in service["tmpfs"], name


def test_the_cache_may_evict_and_the_state_redis_keeps_everything(model: dict) -> None:
    services = model["services"]
    env = services["web"]["environment"]
    assert url_host_port(env["MARQUEE_REDIS_URL"])[0] == "redis"
    assert url_host_port(env["MARQUEE_STATE_REDIS_URL"])[0] == "redis-state"
    cache = services["redis"]["command"]
    assert cache[cache.index("--maxmemory-policy") + 1] == "allkeys-lru"
    state = services["redis-state"]["command"]
    assert state[state.index("--maxmemory-policy") + 1] == "noeviction"
    assert state[state.index("--appendonly") + 1] == "yes"
    assert [v["target"] for v in services["redis-state"]["volumes"]] == ["/data"]  # the AOF
    for name in ("worker", "recommender-1", "web"):
        depends = services[name]["depends_on"]
        assert depends["redis-state"]["condition"] == "service_healthy", name


def test_the_observability_profile_adds_prometheus_and_grafana_on_loopback(
    tmp_path: Path,
) -> None:
    model = compose_model(tmp_path, "observability")
    services = model["services"]
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        (published,) = services[name]["ports"]
        assert (published["host_ip"], published["target"]) == ("127.0.0.1", port), name
    mounted = {v["source"] for name in ("prometheus", "grafana") for v in services[name]["volumes"]}
    observability = ROOT / "deploy" / "observability"
    for path in (
        observability / "prometheus.yml",
        observability / "alerts.yml",
        observability / "grafana" / "provisioning",
        observability / "grafana" / "dashboards",
    ):
        assert str(path) in mounted, path


def test_subscription_runs_as_two_replicas_on_the_postgres_service(model: dict) -> None:
    services = model["services"]
    replicas = {
        name: s for name, s in services.items() if s.get("command") == ["services.subscription"]
    }
    assert len(replicas) >= 2
    web_urls = services["web"]["environment"]["MARQUEE_SUBSCRIPTION_URL"].split(",")
    assert {url_host_port(u)[0] for u in web_urls} == set(replicas)
    for name, service in replicas.items():
        url = service["environment"]["MARQUEE_DATABASE_URL"]
        assert url.startswith("postgresql://") and "@postgres:5432/" in url, name
        assert TEST_SECRETS["POSTGRES_PASSWORD"] in url, name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == TEST_SECRETS["POSTGRES_PASSWORD"]
    assert any(v["source"] == "pgdata" for v in postgres["volumes"])  # data outlives the container
