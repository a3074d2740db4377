"""Each service's Deployment runs its module on its ports, is probed over gRPC health (TLS)
under its service's name, serves TLS from the mounted Secret, reaches its Service, and sets
only variables its settings class reads (a renamed setting fails here)."""

from __future__ import annotations

import importlib

import pytest
from pydantic_settings import BaseSettings

from flywheel_deployer.settings import DeployerSettings
from flywheel_drift.settings import DriftSettings
from flywheel_gateway.settings import GatewaySettings
from flywheel_registry.settings import RegistrySettings
from flywheel_retrain.settings import RetrainSettings
from flywheel_testing.manifests import Manifest, Rendered, settings_env_names

SETTINGS: dict[str, type[BaseSettings]] = {
    "registry": RegistrySettings,
    "deployer": DeployerSettings,
    "gateway": GatewaySettings,
    "drift": DriftSettings,
    "retrain": RetrainSettings,
}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def _container(rendered: Rendered, service: str) -> Manifest:
    deployment = rendered.named("Deployment", f"flywheel-{service}")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _variables_of(rendered: Rendered, container: Manifest) -> dict[str, str]:
    """The values the container's ConfigMaps give it."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values |= rendered.named("ConfigMap", source["configMapRef"]["name"])["data"]
    return values


def _variables(rendered: Rendered, container: Manifest) -> set[str]:
    """Every variable the container gets: its own and those of its ConfigMaps and Secrets."""
    names = {var["name"] for var in container.get("env", [])}
    for source in container.get("envFrom", []):
        for kind, reference in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if reference in source:
                names |= set(rendered.named(kind, source[reference]["name"])["data"])
    return names


@pytest.mark.parametrize("service", SETTINGS)
def test_each_service_is_probed_over_grpc_health_on_its_port(
    overlay: Rendered, service: str
) -> None:
    port = SETTINGS[service].model_fields["grpc"].default.port
    health_name = importlib.import_module(f"flywheel_{service}.grpc_api").SERVICE_NAME
    container = _container(overlay, service)
    assert container["args"] == [f"flywheel_{service}"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"] == port
    ca_file = _variables_of(overlay, container)[
        f"FLYWHEEL_{service.upper()}_GRPC__TLS__CLIENT_CA_FILE"
    ]
    for probe in PROBES:
        # Kubernetes' own gRPC probe speaks no TLS: the probe is the healthcheck module.
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "flywheel_common.healthcheck"], probe
        assert command[-1] == f"127.0.0.1:{port}", probe
        assert command[command.index("--service") + 1] == health_name, probe
        assert command[command.index("--ca-file") + 1] == ca_file, probe
        assert container[probe]["timeoutSeconds"] >= 5, probe
    # Start-up (migrations, a gateway's warm-up) may take longer than liveness allows.
    startup = container["startupProbe"]
    liveness = container["livenessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert startup["periodSeconds"] * startup["failureThreshold"] > liveness["periodSeconds"] * (
        liveness.get("failureThreshold", 3)
    )


@pytest.mark.parametrize("service", SETTINGS)
def test_each_service_listens_where_its_service_sends(overlay: Rendered, service: str) -> None:
    grpc = SETTINGS[service].model_fields["grpc"].default.port
    metrics = SETTINGS[service].model_fields["telemetry"].default.metrics_port
    deployment = overlay.named("Deployment", f"flywheel-{service}")
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)
    names = {v["name"]: v for v in template["spec"]["containers"][0]["env"]}
    assert f"FLYWHEEL_{service.upper()}_INSTANCE_ID" in names
    selecting = [
        s
        for s in overlay.of_kind("Service")
        if s["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    ]
    assert selecting
    for service_object in selecting:
        ports = {p["name"]: p for p in service_object["spec"]["ports"]}
        assert ports["grpc"]["port"] == grpc
        assert ports["grpc"]["targetPort"] == "grpc"


@pytest.mark.parametrize("service", SETTINGS)
def test_each_service_gets_only_variables_its_settings_read(
    overlay: Rendered, service: str
) -> None:
    variables = _variables(overlay, _container(overlay, service))
    unknown = variables - settings_env_names(SETTINGS[service])
    assert not unknown, f"{service} reads no {sorted(unknown)}"


@pytest.mark.parametrize("service", SETTINGS)
def test_each_service_binds_every_address_and_its_declared_ports(
    overlay: Rendered, service: str
) -> None:
    container = _container(overlay, service)
    [source] = container["envFrom"]
    config = overlay.named("ConfigMap", source["configMapRef"]["name"])["data"]
    prefix = f"FLYWHEEL_{service.upper()}_"
    defaults = SETTINGS[service].model_fields
    assert config[f"{prefix}GRPC__HOST"] == "0.0.0.0"
    assert config[f"{prefix}TELEMETRY__METRICS_HOST"] == "0.0.0.0"
    assert config[f"{prefix}GRPC__PORT"] == str(defaults["grpc"].default.port)
    assert config[f"{prefix}TELEMETRY__METRICS_PORT"] == str(
        defaults["telemetry"].default.metrics_port
    )
    assert config[f"{prefix}KAFKA__BOOTSTRAP_SERVERS"] == "flywheel-kafka:9092"
    kafka = overlay.named("Service", "flywheel-kafka")
    assert {p["port"] for p in kafka["spec"]["ports"]} == {9092}


@pytest.mark.parametrize("service", SETTINGS)
def test_each_service_serves_tls_from_the_mounted_secret(overlay: Rendered, service: str) -> None:
    deployment = overlay.named("Deployment", f"flywheel-{service}")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = volumes["tls"]["secret"]["secretName"]
    assert mounts["tls"]["readOnly"] is True
    files = set(overlay.named("Secret", secret)["data"])
    assert files == {"ca.crt", "tls.crt", "tls.key"}
    prefix = f"FLYWHEEL_{service.upper()}_"
    config = _variables_of(overlay, container)
    folder = mounts["tls"]["mountPath"]
    assert config[f"{prefix}GRPC__TLS__CERT_FILE"] == f"{folder}/tls.crt"
    assert config[f"{prefix}GRPC__TLS__KEY_FILE"] == f"{folder}/tls.key"
    assert config.get(f"{prefix}GRPC__TLS__ENABLED", "true") == "true"
    if service != "registry":
        assert config[f"{prefix}REGISTRY_TLS__CA_FILE"] == f"{folder}/ca.crt"
