"""The deployment matches the code: commands exist, ports are the Settings defaults, probes are
routes of the service apps, and every MARQUEE_* name is a Settings field."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.platform.middleware import UNMATCHED
from services.platform.settings import Settings
from tests.deploy.deployfiles import (
    ROOT,
    by_kind,
    compose_model,
    container_env,
    container_env_names,
    dockerfile_env_names,
    dockerfile_exec_form,
    k8s_resources,
    marquee_services,
    marquee_workloads,
    module_argv,
    module_runnable,
    services,
    settings_env_names,
    url_host_port,
)

PROBE_PATHS = ("/healthz", "/readyz")


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return compose_model(tmp_path_factory.mktemp("compose"))


def k8s_containers() -> list[tuple[str, dict]]:
    """The containers of Marquee's own image (the development database's is not ours)."""
    return [
        (workload["metadata"]["name"], container)
        for workload, spec in marquee_workloads(k8s_resources())
        for container in spec["containers"]
    ]


def compose_argv(service: dict) -> tuple[str, ...]:
    """What a compose service runs: the image's ENTRYPOINT followed by the service's command."""
    return module_argv([*dockerfile_exec_form("ENTRYPOINT"), *service["command"]])


def compose_app_services(compose: dict) -> dict[str, dict]:
    return marquee_services(compose)


# ---- environment names -----------------------------------------------------------------------


def test_every_marquee_name_in_the_manifests_is_a_settings_field() -> None:
    known = settings_env_names()
    docs = k8s_resources()
    names: set[str] = set()
    for _, container in k8s_containers():
        names |= container_env_names(container, docs)
    for configmap in by_kind(docs, "ConfigMap").values():
        if configmap["metadata"]["name"] == "marquee-config":
            names |= set(configmap["data"])
    # Secrets loaded whole (envFrom) name environment variables; others are read by key.
    loaded = {
        source["secretRef"]["name"]
        for _, container in k8s_containers()
        for source in container.get("envFrom", [])
        if "secretRef" in source
    }
    for name, secret in by_kind(docs, "Secret").items():
        if name in loaded:
            names |= set(secret.get("stringData", {}))
    assert names, "no environment in the manifests"
    marquee = {n for n in names if n.startswith("MARQUEE_")}
    assert marquee <= known, f"not Settings fields: {sorted(marquee - known)}"


def test_other_environment_names_are_only_arguments_of_their_command() -> None:
    """A name that is not a setting (the training job's data source) exists only to be put into
    the container's arguments as $(NAME): nothing reads it from the environment."""
    docs = k8s_resources()
    for workload, container in k8s_containers():
        argv = " ".join(container["command"] + container.get("args", []))
        for name in container_env_names(container, docs):
            if not name.startswith("MARQUEE_"):
                assert f"$({name})" in argv, (workload, name)


def test_every_marquee_name_in_compose_and_the_dockerfile_is_a_settings_field(
    compose: dict,
) -> None:
    known = settings_env_names()
    names = {n for s in compose_app_services(compose).values() for n in s["environment"]}
    names |= {n for n in dockerfile_env_names() if n.startswith("MARQUEE_")}
    assert names <= known, f"not Settings fields: {sorted(names - known)}"


def test_every_process_gets_the_secrets_it_needs(compose: dict) -> None:
    secrets = {"MARQUEE_SECRET_KEY", "MARQUEE_SERVICE_TOKEN", "MARQUEE_ADMIN_TOKEN"}
    docs = k8s_resources()
    for name, container in k8s_containers():
        assert secrets <= container_env_names(container, docs), name
    for name, service in compose_app_services(compose).items():
        assert secrets <= set(service["environment"]), name


def test_settings_parse_the_deployed_environment(compose: dict) -> None:
    """Every value the manifests and compose set is one Settings.from_env accepts."""
    docs = k8s_resources()
    environments = [container_env(c, docs) for _, c in k8s_containers()]
    environments += [s["environment"] for s in compose_app_services(compose).values()]
    for env in environments:
        settings = Settings.from_env(env, need_secrets=False)
        assert settings.host == "0.0.0.0"
        assert settings.redis_url.startswith("redis://")


# ---- commands and ports ----------------------------------------------------------------------


def test_every_container_command_is_a_contract_command_that_exists(compose: dict) -> None:
    table = services()
    argvs = [module_argv(c["command"]) for _, c in k8s_containers()]
    argvs += [compose_argv(s) for s in compose_app_services(compose).values()]
    argvs.append(module_argv([*dockerfile_exec_form("ENTRYPOINT"), *dockerfile_exec_form("CMD")]))
    for argv in argvs:
        assert argv in table, f"python -m {' '.join(argv)} is not a contract command"
        assert module_runnable(argv[0]), f"python -m {argv[0]} cannot run"
    # every contract command is deployed somewhere
    assert set(table) <= set(argvs)


def test_the_recommender_cli_knows_every_deployed_subcommand() -> None:
    """``python -m recommender <sub>``: serve/worker dispatch lazily, the rest is argparse."""
    main_module = importlib.import_module("recommender.__main__")
    cli = importlib.import_module("recommender.cli")
    parser = cli.build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    known = set(getattr(main_module, "LAZY_COMMANDS", {})) | set(subparsers.choices)
    deployed = {argv[1] for argv in services() if argv[0] == "recommender"}
    assert deployed <= known, f"unknown recommender subcommands: {sorted(deployed - known)}"
    result = subprocess.run(
        [sys.executable, "-m", "recommender", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_container_ports_are_the_settings_defaults(compose: dict) -> None:
    table = services()
    for name, container in k8s_containers():
        service = table[module_argv(container["command"])]
        ports = [p["containerPort"] for p in container.get("ports", [])]
        assert ports == ([service.port] if service.port else []), name
    for name, svc in compose_app_services(compose).items():
        service = table[compose_argv(svc)]
        if "healthcheck" in svc:
            url = next(t for t in svc["healthcheck"]["test"] if "http://" in t)
            port = urlsplit(url[url.index("http://") :].split("'")[0]).port
            assert port == service.port, name


def test_backend_urls_use_the_backend_ports(compose: dict) -> None:
    defaults = Settings()
    expected = {
        "MARQUEE_CATALOG_URL": defaults.catalog_port,
        "MARQUEE_SUBSCRIPTION_URL": defaults.subscription_port,
        "MARQUEE_RECOMMENDER_URLS": defaults.recommender_port,
    }
    docs = k8s_resources()
    environments = [container_env(c, docs) for _, c in k8s_containers()]
    environments += [s["environment"] for s in compose_app_services(compose).values()]
    for env in environments:
        for name, port in expected.items():
            for url in env[name].split(","):
                assert url_host_port(url)[1] == port, (name, url)


# ---- probes are real routes ------------------------------------------------------------------


def _http_services() -> list:
    return [s for s in services().values() if s.app_module]


def _app_paths(app_module: str, tmp_path: Path) -> set[str]:
    module = importlib.import_module(app_module)
    settings = Settings(
        mode="microservices",
        var_dir=tmp_path,
        redis_url="",
        secret_key="s",
        service_token="t",
        admin_token="a",
    )
    app = module.create_app(settings)
    paths = set()
    for route in app.router.routes():
        if route.name == UNMATCHED:
            continue
        info = route.resource.get_info() if route.resource else {}
        paths.add(info.get("path") or info.get("formatter"))
    return paths


@pytest.mark.parametrize("service", _http_services(), ids=lambda s: s.argv[0])
def test_probe_paths_are_routes_of_the_service_app(service, tmp_path: Path) -> None:
    paths = _app_paths(service.app_module, tmp_path)
    for path in PROBE_PATHS:
        assert path in paths, f"{service.app_module} has no {path}"


def test_probes_in_manifests_and_compose_use_the_probe_paths(compose: dict) -> None:
    for name, container in k8s_containers():
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["path"] in PROBE_PATHS, (name, probe)
    for name, svc in compose_app_services(compose).items():
        if "healthcheck" in svc:
            test = " ".join(svc["healthcheck"]["test"])
            assert any(path in test for path in PROBE_PATHS), name


def test_settings_fields_exist_for_the_deployment_knobs() -> None:
    """The knobs the deployment docs tell operators to set are real Settings fields."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    for name in (
        "mode",
        "host",
        "workers",
        "redis_url",
        "model_dir",
        "var_dir",
        "recommender_urls",
        "subscription_db",
        "database_url",
        "model_signing_key",
    ):
        assert name in fields, name


def test_env_files_set_only_settings_fields() -> None:
    """deploy/*.env (honcho's env for `make run-micro`, the compose .env example)."""
    known = settings_env_names()
    for path in sorted((ROOT / "deploy").glob("*.env*")):
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, value = line.partition("=")
            if name.startswith("MARQUEE_"):
                assert name in known, f"{path.name}: {name} is not a Settings field"
            else:
                # compose's own variables: the image tag, the compose PostgreSQL's password
                assert name in {"IMAGE_TAG", "POSTGRES_PASSWORD"}, f"{path.name}: unexpected {name}"
    env = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy" / "microservices.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    settings = Settings.from_env(env, need_secrets=False)
    procfile_redis_port = 6390
    assert settings.redis_url == f"redis://127.0.0.1:{procfile_redis_port}/0"
    assert f"--port {procfile_redis_port}" in (ROOT / "Procfile").read_text()
