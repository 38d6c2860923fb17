"""The Grafana dashboard and its provisioning: valid, wired to Prometheus, querying real metrics."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import generate_latest

from stream_monitor.forward.metrics import ForwardMetrics
from stream_monitor.metrics import Metrics
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\bstream_monitor_[a-z_]+\b")
_SUFFIXES = {"counter": ("",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def dashboard() -> dict[str, object]:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "stream-monitor.json").read_text())  # type: ignore[no-any-return]


def queried_metrics() -> set[str]:
    """Metrics in the dashboard's queries and in the shipped Prometheus alerting rules."""
    text = json.dumps(dashboard()) + (DEPLOY / "prometheus" / "alerts.yml").read_text()
    return set(METRIC.findall(text))


def exposed_metrics(exposition: str) -> set[str]:
    """Every sample name a scrape can contain, from the `# TYPE` lines (present before samples)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        names.update(name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    queried = queried_metrics()
    assert len(queried) >= 20
    exposition = generate_latest(Metrics().registry) + generate_latest(ForwardMetrics().registry)
    missing = queried - exposed_metrics(exposition.decode())
    assert not missing


def test_dashboard_panels_use_the_provisioned_prometheus_datasource() -> None:
    board = dashboard()
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    panels = [p for p in board["panels"] if p["type"] != "row"]  # type: ignore[attr-defined,index]
    assert panels and all(p["datasource"]["uid"] == uid for p in panels)
    assert all(t["expr"] and t["datasource"]["uid"] == uid for p in panels for t in p["targets"])
    ids = [p["id"] for p in board["panels"]]  # type: ignore[attr-defined,index]
    assert len(ids) == len(set(ids))
    providers = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "stream-monitor.yaml").read_text()
    )
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["monitor:9650"]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert all(rule["expr"] for group in rules["groups"] for rule in group["rules"])


def test_compose_observability_profile_mounts_the_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["prometheus"]["profiles"] == ["observability"]
    assert services["grafana"]["profiles"] == ["observability"]
    volumes = services["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    assert "9650:9650" in services["monitor"]["ports"]
    docker = yaml.safe_load((ROOT / "configs" / "docker.yaml").read_text())
    assert docker["metrics"] == {"enabled": True, "host": "0.0.0.0", "port": 9650}
