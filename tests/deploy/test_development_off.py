"""Issue 18.2: development conveniences (demo logins: a MovieLens user id without a password;
placeholder secrets) are never on in what is deployed: no production manifest, no compose
service, no image sets MARQUEE_DEVELOPMENT, and the settings each deployed process parses from
its environment say development is off."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.platform.settings import Settings, variable
from tests.deploy.deployfiles import (
    COMPOSE,
    DOCKERFILE,
    K8S,
    compose_model,
    container_env,
    container_env_names,
    dockerfile_env_names,
    k8s_resources,
    marquee_services,
    marquee_workloads,
)

DEVELOPMENT = variable("development")  # MARQUEE_DEVELOPMENT
SECRETS = {variable(n): f"deploy-test-{n}-value" for n in ("secret_key", "service_token")}


def deployed_files() -> list[Path]:
    """Every file that describes a deployment: the Kubernetes base and overlays (patches
    included), compose.yaml, the Dockerfile and the example .env."""
    return [*sorted(K8S.rglob("*.yaml")), COMPOSE, DOCKERFILE, K8S.parent / "env.example"]


def test_no_deployment_file_mentions_development() -> None:
    offenders = [str(p) for p in deployed_files() if DEVELOPMENT in p.read_text()]
    assert offenders == [], f"{DEVELOPMENT} must never be set where Marquee is deployed"


def test_no_kubernetes_container_gets_development_and_each_parses_as_production() -> None:
    docs = k8s_resources()
    checked = 0
    for workload, pod in marquee_workloads(docs):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            name = f"{workload['metadata']['name']}/{container['name']}"
            assert DEVELOPMENT not in container_env_names(container, docs), name
            env = {**container_env(container, docs), **SECRETS, variable("admin_token"): "x" * 20}
            assert Settings.from_env(env).development is False, name
            checked += 1
    assert checked >= 5


def test_no_compose_service_runs_in_development(tmp_path: Path) -> None:
    services = marquee_services(compose_model(tmp_path))
    assert services
    for name, service in services.items():
        env = service.get("environment") or {}
        assert DEVELOPMENT not in env, name
        parsed = Settings.from_env({k: str(v) for k, v in env.items() if v is not None})
        assert parsed.development is False, name


def test_the_image_does_not_set_development() -> None:
    assert DEVELOPMENT not in dockerfile_env_names()


@pytest.mark.parametrize("value", ["true", "1", "yes", "on"])
def test_the_check_would_catch_a_manifest_that_turned_it_on(value: str) -> None:
    """What the tests above look for is what turns development on."""
    env = {**SECRETS, variable("admin_token"): "x" * 20, DEVELOPMENT: value}
    assert Settings.from_env(env).development is True
