"""The observability pack (deploy/observability): Prometheus config and alert rules checked and
unit-tested by promtool, the Grafana dashboard's every query parsed by promtool, and every metric
they name one the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from services.platform.metrics import Metrics
from tests.deploy.deployfiles import compose_model, marquee_services, services
from tests.support import PROJECT_ROOT

PACK = PROJECT_ROOT / "deploy" / "observability"
DASHBOARD = PACK / "grafana" / "dashboards" / "marquee.json"
DATASOURCES = PACK / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
METRIC = re.compile(r"\b((?:marquee|process)_[a-z_]+)\b")
# The scrape job of each HTTP service: what the alert rules and the dashboard group by.
JOBS = {
    ("web_server",): "web",
    ("services.catalog",): "catalog",
    ("services.subscription",): "subscription",
    ("recommender", "serve"): "recommender",
}


def promtool(*args: str, cwd: Path = PACK) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: apt-get install --no-install-recommends prometheus"
    result = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def dashboard_panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PACK / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported_series() -> set[str]:
    """Every series name a Marquee process can expose (from the Metrics class itself, whose
    registry also carries the process collector)."""
    names: set[str] = set()
    families: list[Metric] = list(Metrics("any").registry.collect())
    for family in families:
        if family.type == "counter":
            names |= {family.name + "_total"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def test_the_prometheus_config_and_the_alert_rules_pass_promtool() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_each_alert_fires_on_its_unit_test_series() -> None:
    """alerts.test.yml: error rate, page p99, open breaker, stuck queue fire as expected."""
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")
    tested = {
        t["alertname"]
        for case in yaml.safe_load((PACK / "alerts.test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert {"MarqueeErrorRateHigh", "MarqueePageLatencyHigh", "MarqueeCircuitOpen"} <= tested


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    out = promtool("check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(dashboard_queries())} rules found" in out


@pytest.mark.parametrize("where", ["dashboard", "alerts"], ids=["dashboard", "alerts"])
def test_queries_name_only_metrics_the_code_exports(where: str) -> None:
    exprs = dashboard_queries() if where == "dashboard" else [r["expr"] for r in alert_rules()]
    named = {m for expr in exprs for m in METRIC.findall(expr)}
    assert named
    unknown = named - exported_series()
    assert not unknown, f"{where} names metrics nothing exports: {sorted(unknown)}"


def test_the_dashboard_covers_pages_recommender_cache_queue_and_model_versions() -> None:
    panels = dashboard_panels()
    rows = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "row"]
    for topic in ("Pages", "Recommender", "Cache", "Batch queue", "Experiments"):
        assert any(topic in title for title in rows), topic
    queries = " ".join(dashboard_queries())
    for family in (
        "marquee_http_request_duration_seconds_bucket",
        "marquee_fallbacks_total",
        "marquee_circuit_state",
        "marquee_cache_requests_total",
        "marquee_batch_queue_depth",
        "marquee_model_info",
    ):
        assert family in queries, family
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and p["gridPos"]["w"] <= 24 for p in panels)


def test_the_dashboard_uses_the_provisioned_data_source() -> None:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for panel in dashboard_panels():
        uids = {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]}
        assert uids == {source["uid"]}, panel["title"]


def test_every_alert_says_how_bad_and_what() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"page", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_prometheus_scrapes_every_http_service_of_compose_on_its_port(tmp_path: Path) -> None:
    config = yaml.safe_load((PACK / "prometheus.yml").read_text())
    scraped = {
        target: job["job_name"]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    table = services()
    expected = {}
    for name, service in marquee_services(compose_model(tmp_path, "observability")).items():
        argv = tuple(service["command"])  # after the image's `python -m`
        if argv in JOBS:
            expected[f"{name}:{table[argv].port}"] = JOBS[argv]
    assert scraped == expected
