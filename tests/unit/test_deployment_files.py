"""docker-compose.yml, the Dockerfile and the monitoring configs agree with each other and
with the services' own defaults (the Kubernetes manifests: tests/k8s)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel_deployer.settings import DeployerSettings
from flywheel_drift.settings import DriftSettings
from flywheel_gateway.settings import GatewaySettings
from flywheel_registry.settings import RegistrySettings
from flywheel_retrain.settings import RetrainSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "registry": RegistrySettings,
    "deployer": DeployerSettings,
    "gateway": GatewaySettings,
    "drift": DriftSettings,
    "retrain": RetrainSettings,
}


def _ports(name: str) -> tuple[int, int]:
    """The service's default gRPC and Prometheus ports, from its settings class."""
    defaults = SETTINGS[name].model_fields
    return defaults["grpc"].default.port, defaults["telemetry"].default.metrics_port


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_names_every_service_and_its_backends(compose: dict[str, Any]) -> None:
    expected = {*SETTINGS, "kafka", "postgres", "otel-collector", "prometheus", "grafana"}
    assert expected <= set(compose["services"])


@pytest.mark.parametrize("name", SETTINGS)
def test_each_compose_service_runs_its_module_on_its_port(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    grpc, _ = _ports(name)
    assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert service["command"] == [f"flywheel_{name}"]
    # The drift service also serves its HTML reports on a port of their own, the gateway
    # its REST API.
    extra_port = {"drift": DriftSettings().report.port, "gateway": GatewaySettings().http.port}
    extra = [f"{extra_port[name]}:{extra_port[name]}"] if name in extra_port else []
    assert service["ports"] == [f"{grpc}:{grpc}", *extra]
    assert str(grpc) in service["healthcheck"]["test"][-1]
    prefix = f"FLYWHEEL_{name.upper()}_"
    assert all(key.startswith(prefix) for key in service["environment"])
    assert service["environment"][f"{prefix}KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    for field in service["environment"]:
        top = field.removeprefix(prefix).split("__")[0].lower()
        assert top in SETTINGS[name].model_fields, f"{field} is not a {name} setting"


def test_the_dockerfile_installs_the_workspace_and_runs_a_module() -> None:
    dockerfile = (ROOT / "infra/docker/Dockerfile").read_text()
    assert "uv sync --frozen --no-dev --all-packages" in dockerfile
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile


def test_prometheus_scrapes_every_metrics_port_and_grafana_has_the_dashboard() -> None:
    config = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{name}:{_ports(name)[1]}" for name in SETTINGS)
    dashboard = json.loads((ROOT / "infra/grafana/dashboards/flywheel.json").read_text())
    assert dashboard["panels"]
    assert all(panel["targets"][0]["expr"] for panel in dashboard["panels"])
