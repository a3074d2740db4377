"""Every pod runs as a non-root user without privileges, capabilities or an API token; the
root file systems are read-only, in Kubernetes and in docker compose; compose's services
require tokens and hold the least privilege they need."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flywheel_common.settings import Role, ServiceSettings, WithRegistry
from flywheel_deployer.settings import DeployerSettings
from flywheel_drift.settings import DriftSettings
from flywheel_gateway.settings import GatewaySettings
from flywheel_registry.settings import RegistrySettings
from flywheel_retrain.settings import RetrainSettings
from flywheel_testing.manifests import ROOT, Rendered


def test_every_pod_runs_unprivileged_without_an_api_token(overlay: Rendered) -> None:
    accounts = {a["metadata"]["name"]: a for a in overlay.of_kind("ServiceAccount")}
    for workload in overlay.workloads():
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name
        assert accounts[pod["serviceAccountName"]]["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name


def test_the_services_write_only_to_their_empty_dirs(overlay: Rendered) -> None:
    for deployment in overlay.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        for path in ("/var/lib/flywheel", "/tmp"):
            assert "emptyDir" in volumes[mounts[path]], f"{deployment['metadata']['name']} {path}"


def test_the_services_run_as_the_images_user(overlay: Rendered) -> None:
    dockerfile = (ROOT / "infra/docker/Dockerfile").read_text()
    user = re.search(r"^USER (\d+)$", dockerfile, re.MULTILINE)
    assert user, "the image names its user by number"
    for deployment in overlay.of_kind("Deployment"):
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(
            user[1]
        )


def test_every_container_runs_as_non_root_on_a_read_only_root(overlay: Rendered) -> None:
    """Kafka and PostgreSQL included: whatever a container writes goes to a volume."""
    for workload in overlay.workloads():
        pod = workload["spec"]["template"]["spec"]
        volumes = {volume["name"] for volume in pod.get("volumes", [])}
        volumes |= {
            claim["metadata"]["name"] for claim in workload["spec"].get("volumeClaimTemplates", [])
        }
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            name = f"{workload['metadata']['name']}/{container['name']}"
            context = {**pod["securityContext"], **container.get("securityContext", {})}
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] > 0, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            mounted = {mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounted <= volumes, f"{name} mounts {mounted - volumes}, which do not exist"
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), name


def test_docker_compose_runs_the_services_on_a_read_only_root() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = {name: s for name, s in compose["services"].items() if "build" in s}
    flywheel = {"registry", "deployer", "gateway", "drift", "retrain"}
    assert set(services) == flywheel | {"credentials"}  # the one-shot certificate maker
    for name, service in services.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert any(entry.split(":")[0] == "/tmp" for entry in service["tmpfs"]), name
        assert "flywheel-data:/var/lib/flywheel" in service["volumes"], name
    for name in flywheel:
        environment = services[name]["environment"]
        data_dir = next(v for k, v in environment.items() if k.endswith("_DATA_DIR"))
        assert data_dir.startswith("/var/lib/flywheel/"), name
    # Training jobs write relative to their working folder, which the root's /app is not.
    workdir = services["retrain"]["environment"]["FLYWHEEL_RETRAIN_TRAINING_WORKDIR"]
    assert workdir.startswith("/var/lib/flywheel/")


def test_training_jobs_work_in_the_retrain_triggers_data_folder(overlay: Rendered) -> None:
    [settings] = [
        config["data"]
        for config in overlay.of_kind("ConfigMap")
        if config["metadata"]["name"].startswith("flywheel-retrain")
    ]
    assert settings["FLYWHEEL_RETRAIN_TRAINING_WORKDIR"] == settings["FLYWHEEL_RETRAIN_DATA_DIR"]


_SETTINGS: dict[str, type[ServiceSettings]] = {
    "registry": RegistrySettings,
    "deployer": DeployerSettings,
    "gateway": GatewaySettings,
    "drift": DriftSettings,
    "retrain": RetrainSettings,
}


def test_docker_compose_requires_tokens_and_gives_each_service_the_role_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credentials service's own command, run here with the volume at `tmp_path`, then
    every service's settings read from its compose environment: tokens required (never
    anonymous), TLS files present, registry tokens of the roles README's table names."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volume = "/var/lib/flywheel"

    def local(value: object) -> str:
        return str(value).replace(volume, str(tmp_path))

    command = [local(part) for part in compose["services"]["credentials"]["command"]]
    assert command[0] == "flywheel_cli"
    made = subprocess.run(
        [sys.executable, "-m", *command], capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr

    settings: dict[str, ServiceSettings] = {}
    for name, kind in _SETTINGS.items():
        environment = compose["services"][name]["environment"]
        with monkeypatch.context() as patch:
            for key, value in environment.items():
                patch.setenv(key, local(value))
            settings[name] = kind()
    registry = settings["registry"]
    for name, service in settings.items():
        assert service.auth.has_identities, name
        assert not service.auth.allow_anonymous, name
        assert Path(service.grpc.tls.cert_file).is_file(), name
        if isinstance(service, WithRegistry):
            needs = Role.WRITER if name == "retrain" else Role.READER
            assert registry.auth.all_tokens()[service.registry_token] is needs, name
