"""The Kubernetes manifests: valid against the API schemas, complete, and wired to each other."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.deploy.deployfiles import (
    K8S,
    K8S_BASE,
    K8S_VERSIONS,
    KUSTOMIZATION,
    by_kind,
    k8s_resources,
    kustomization_dirs,
    manifest_files,
    marquee_workloads,
    pod_spec,
    url_host_port,
    workloads,
    yaml_documents,
)

HTTP_DEPLOYMENTS = ("web", "catalog", "subscription", "recommender")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    files = manifest_files()
    assert files, "no manifests under deploy/k8s"
    checked = 0
    for path in files:
        for doc in yaml_documents(path):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
            checked += 1
    assert checked >= 15


def test_every_kustomization_lists_exactly_the_files_beside_it() -> None:
    dirs = kustomization_dirs()
    assert K8S_BASE in dirs
    for directory in dirs:
        kustomization = yaml_documents(directory / KUSTOMIZATION)[0]
        assert kustomization["kind"] == "Kustomization"
        listed = kustomization.get("resources", [])
        assert len(listed) == len(set(listed)), f"{directory}: a resource is listed twice"
        local = [r for r in listed if not r.startswith("..")]
        for name in listed:
            assert (directory / name).exists(), f"{directory}: {name} does not exist"
        present = {p.name for p in directory.glob("*.yaml")} - {KUSTOMIZATION}
        patches = {p.get("path") for p in kustomization.get("patches", [])}
        assert present - patches == set(local), f"{directory}: listed {local}, present {present}"


def test_resource_names_are_unique_per_kind() -> None:
    seen: set[tuple[str, str]] = set()
    for doc in k8s_resources():
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, key
        seen.add(key)


def test_every_workload_uses_the_image_kustomize_sets() -> None:
    kustomization = yaml_documents(K8S_BASE / KUSTOMIZATION)[0]
    image_names = {i["name"] for i in kustomization["images"]}
    for workload, spec in workloads(k8s_resources()):
        for container in spec["containers"]:
            assert container["image"] in image_names, workload["metadata"]["name"]


def test_deployment_selectors_match_their_pods() -> None:
    for name, deployment in by_kind(k8s_resources(), "Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name


def test_services_select_pods_and_target_named_container_ports() -> None:
    docs = k8s_resources()
    deployments = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    for name, service in by_kind(docs, "Service").items():
        if service["spec"].get("type") == "ExternalName":
            continue
        selector = service["spec"]["selector"]
        matches = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, f"service {name} selects {len(matches)} workloads"
        container_ports = {
            p["name"]: p["containerPort"]
            for c in matches[0]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in container_ports or target in container_ports.values(), (name, port)
            # same number outside and inside: the URLs in the config use the service port
            assert port["port"] == container_ports.get(target, target), (name, port)


def test_autoscalers_and_disruption_budgets_point_at_real_deployments() -> None:
    docs = k8s_resources()
    deployments = by_kind(docs, "Deployment")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert {"web", "recommender"} <= set(hpas)
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, name
        assert hpa["spec"]["minReplicas"] >= 2, name
        # CPU utilisation is a fraction of the request: without requests the HPA cannot work
        pod = deployments[target["name"]]["spec"]["template"]["spec"]
        assert all("cpu" in c["resources"]["requests"] for c in pod["containers"]), name
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert {"web", "recommender"} <= set(pdbs)
    for name, pdb in pdbs.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(
            selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in deployments.values()
        ), name


def test_pods_run_non_root_read_only_with_limits() -> None:
    ours = {w["metadata"]["name"] for w, _ in marquee_workloads(k8s_resources())}
    for workload, spec in workloads(k8s_resources()):
        name = workload["metadata"]["name"]
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert spec.get("automountServiceAccountToken") is False, name
        if name in ours:
            assert pod_security["runAsUser"] == 10001, name  # the Dockerfile's USER
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
            mounted = {m["mountPath"] for m in container.get("volumeMounts", [])}
            needed = {"/app/var", "/tmp"} if name in ours else {"/tmp"}
            assert needed <= mounted, f"{name}: a read-only root needs {needed}"


def test_volumes_refer_to_existing_claims_and_models_are_read_only_for_servers() -> None:
    docs = k8s_resources()
    claims = by_kind(docs, "PersistentVolumeClaim")
    assert claims["models"]["spec"]["accessModes"] == ["ReadWriteMany"]
    model_mounts: dict[str, bool] = {}
    for workload, spec in workloads(docs):
        name = workload["metadata"]["name"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        }
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] in templates:  # a StatefulSet's own claim per pod
                    continue
                volume = volumes[mount["name"]]
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    assert claim in claims, (name, claim)
                    if claim == "models":
                        model_mounts[name] = bool(mount.get("readOnly"))
    # servers only read; the jobs that train and roll back write the registry
    assert model_mounts == {
        "recommender": True,
        "worker": True,
        "train": False,
        "model-rollback": False,
    }


def test_subscription_runs_two_or_more_replicas_on_the_database_secret() -> None:
    docs = k8s_resources()
    deployment = by_kind(docs, "Deployment")["subscription"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "subscription" in by_kind(docs, "PodDisruptionBudget")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (url,) = [e for e in container["env"] if e["name"] == "MARQUEE_DATABASE_URL"]
    ref = url["valueFrom"]["secretKeyRef"]
    secret = by_kind(docs, "Secret")[ref["name"]]
    assert secret["stringData"][ref["key"]].startswith("postgresql://")
    assert "persistentVolumeClaim" not in str(deployment)  # no local state any more


def test_development_database_is_a_statefulset_the_url_names() -> None:
    docs = k8s_resources()
    statefulset = by_kind(docs, "StatefulSet")["postgres"]
    assert statefulset["spec"]["replicas"] == 1
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    (container,) = pod_spec(statefulset)["containers"]
    assert claim["metadata"]["name"] in {m["name"] for m in container["volumeMounts"]}
    secret = by_kind(docs, "Secret")["marquee-database"]["stringData"]
    host, port = url_host_port(secret["url"])
    service = by_kind(docs, "Service")[host]
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    assert port in {p["port"] for p in service["spec"]["ports"]}
    assert secret["password"] in secret["url"]  # the database and its clients agree


def test_production_overlay_replaces_the_development_database() -> None:
    overlay = K8S / "overlays" / "production"
    kustomization = yaml_documents(overlay / KUSTOMIZATION)[0]
    deleted = set()
    for patch in kustomization.get("patches", []):
        doc = yaml.safe_load(patch["patch"])
        if isinstance(doc, dict) and doc.get("$patch") == "delete":
            deleted.add((doc["kind"], doc["metadata"]["name"]))
    assert {
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("Secret", "marquee-database"),
    } <= deleted


def test_http_deployments_have_liveness_and_readiness_probes_on_their_port() -> None:
    deployments = by_kind(k8s_resources(), "Deployment")
    for name in HTTP_DEPLOYMENTS:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            assert get["port"] in ports or get["port"] in ports.values(), (name, probe)


def test_training_is_a_cronjob_that_never_overlaps() -> None:
    cronjob = by_kind(k8s_resources(), "CronJob")["train"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = pod_spec(cronjob)["containers"]
    assert container["command"] == ["python", "-m", "recommender", "train"]
    rollback = by_kind(k8s_resources(), "CronJob")["model-rollback"]
    assert rollback["spec"]["suspend"] is True  # only a template for `kubectl create job --from`


def test_backend_urls_name_services_on_their_ports() -> None:
    docs = k8s_resources()
    services = by_kind(docs, "Service")
    config = by_kind(docs, "ConfigMap")["marquee-config"]["data"]
    urls = [config["MARQUEE_CATALOG_URL"], config["MARQUEE_SUBSCRIPTION_URL"]]
    urls += config["MARQUEE_RECOMMENDER_URLS"].split(",")
    for url in urls:
        host, port = url_host_port(url)
        assert host in services, url
        assert port in {p["port"] for p in services[host]["spec"]["ports"]}, url
    redis_host, _ = url_host_port(config["MARQUEE_REDIS_URL"])
    assert services[redis_host]["spec"]["type"] == "ExternalName"


def test_secrets_hold_only_placeholders() -> None:
    secrets = by_kind(k8s_resources(), "Secret")
    assert {"marquee-secrets", "marquee-database"} <= set(secrets)
    for name, secret in secrets.items():
        assert secret["stringData"], name
        assert all("replace-me" in v for v in secret["stringData"].values()), name


def test_overlay_patches_target_base_resources() -> None:
    base = {(d["kind"], d["metadata"]["name"]) for d in k8s_resources()}
    overlays = [d for d in kustomization_dirs() if d != K8S_BASE]
    assert overlays, "expected an example overlay"
    for directory in overlays:
        kustomization = yaml_documents(directory / KUSTOMIZATION)[0]
        for patch in kustomization.get("patches", []):
            if "target" in patch:
                target = (patch["target"]["kind"], patch["target"]["name"])
            else:  # a strategic-merge patch names its target itself
                doc = yaml.safe_load(patch["patch"])
                target = (doc["kind"], doc["metadata"]["name"])
            assert target in base, f"{directory.name}: patch targets missing {target}"


def test_the_web_server_reaches_every_recommender_pod_through_a_headless_service() -> None:
    docs = k8s_resources()
    config = by_kind(docs, "ConfigMap")["marquee-config"]["data"]
    (url,) = config["MARQUEE_RECOMMENDER_URLS"].split(",")
    host, _ = url_host_port(url)
    service = by_kind(docs, "Service")[host]
    assert service["spec"]["clusterIP"] == "None"  # DNS names every ready pod, no virtual IP
    pods = by_kind(docs, "Deployment")["recommender"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pods.items()
    assert not service["spec"].get("publishNotReadyAddresses")  # only ready pods get traffic
    assert float(config["MARQUEE_BACKEND_DNS_REFRESH"]) > 0  # re-resolved as pods come and go


def test_the_cache_and_the_durable_state_are_separate_managed_redis() -> None:
    docs = k8s_resources()
    config = by_kind(docs, "ConfigMap")["marquee-config"]["data"]
    services = by_kind(docs, "Service")
    hosts = {url_host_port(config[n])[0] for n in ("MARQUEE_REDIS_URL", "MARQUEE_STATE_REDIS_URL")}
    assert len(hosts) == 2
    for host in hosts:
        assert services[host]["spec"]["type"] == "ExternalName"
    assert config["MARQUEE_REDIS_NAMESPACE"]  # fixed: every pod of the install shares it


def test_the_ingress_serves_only_the_web_server_over_tls() -> None:
    docs = k8s_resources()
    services = by_kind(docs, "Service")
    (ingress,) = by_kind(docs, "Ingress").values()
    spec = ingress["spec"]
    tls_hosts = {h for t in spec["tls"] for h in t["hosts"]}
    assert all(t["secretName"] for t in spec["tls"])
    backends = []
    for rule in spec["rules"]:
        assert rule["host"] in tls_hosts, rule["host"]  # no host served without its certificate
        backends += [p["backend"]["service"] for p in rule["http"]["paths"]]
    assert {b["name"] for b in backends} == {"web"}
    for backend in backends:
        ports = {p["port"] for p in services[backend["name"]]["spec"]["ports"]}
        assert backend["port"]["number"] in ports


def test_network_policies_close_the_namespace_and_open_each_port_to_its_callers() -> None:
    docs = k8s_resources()
    policies = by_kind(docs, "NetworkPolicy")
    deny = [p for p in policies.values() if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1 and "ingress" not in deny[0]["spec"]
    assert deny[0]["spec"]["policyTypes"] == ["Ingress"]
    deployments = by_kind(docs, "Deployment")
    for name in HTTP_DEPLOYMENTS:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        port = container["ports"][0]["containerPort"]
        opening = [
            p
            for p in policies.values()
            if p["spec"]["podSelector"]
            and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert opening, f"nothing opens {name}"
        rules = [rule for p in opening for rule in p["spec"]["ingress"]]
        assert {pt["port"] for rule in rules for pt in rule["ports"]} == {port}, name
        sources = [source for rule in rules for source in rule["from"]]
        pods = {
            s["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for s in sources
            if "podSelector" in s
        }
        namespaces = {
            s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for s in sources
            if "namespaceSelector" in s
        }
        assert "monitoring" in namespaces, name  # Prometheus scrapes /metrics
        if name == "web":
            assert not pods and "ingress-nginx" in namespaces
        else:
            assert pods == {"web"}, name  # only the web server calls the backends


def test_training_reads_the_configured_source_within_a_memory_limit() -> None:
    docs = k8s_resources()
    cronjob = by_kind(docs, "CronJob")["train"]
    spec = pod_spec(cronjob)
    (container,) = spec["containers"]
    assert container["args"] == ["--ratings", "$(RATINGS)"]
    (env,) = [e for e in container["env"] if e["name"] == "RATINGS"]
    ref = env["valueFrom"]["configMapKeyRef"]
    source = by_kind(docs, "ConfigMap")[ref["name"]]["data"][ref["key"]]
    assert not source.startswith("/app/")  # not the sample baked into the image
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    (mount_path,) = [p for p in mounts if source.startswith(p + "/")]
    assert mounts[mount_path]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = volumes[mounts[mount_path]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind(docs, "PersistentVolumeClaim")
    resources = container["resources"]
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == "4Gi"
