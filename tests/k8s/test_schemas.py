"""Every object the overlays render to is valid Kubernetes of the pinned version (strict
schemas: an unknown or misspelt field fails too), and every image is pinned."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import yaml

from flywheel_testing.manifests import ROOT, Rendered

# The oldest Kubernetes the manifests are for: gRPC probes, matchLabelKeys in topology
# spread constraints and the StatefulSet pod-index label are all on by default there.
KUBERNETES_VERSION = "1.30"


def test_every_object_matches_the_kubernetes_schema(overlay: Rendered) -> None:
    errors = []
    for manifest in overlay.objects:
        try:
            used = kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            errors.append(f"{name} {where}: {error.message}")
            continue
        assert used == KUBERNETES_VERSION
    assert not errors, "\n".join(errors)


def test_every_image_names_a_version(overlay: Rendered) -> None:
    for workload, container in overlay.containers():
        image = container["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{image} has no tag"
        assert re.fullmatch(r"[\w][\w.-]*", tag), f"{image} has no tag"
        assert tag != "latest", f"{workload['metadata']['name']} runs {image}"


def test_kafka_runs_the_version_the_project_tests_against(overlay: Rendered) -> None:
    pom = (ROOT / "infra/kafka/pom.xml").read_text()
    version = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    assert version
    [container] = overlay.named("StatefulSet", "flywheel-kafka")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["image"] == f"apache/kafka:{version[1]}"


def test_the_services_run_the_image_docker_compose_builds(overlay: Rendered) -> None:
    compose = yaml.safe_load(Path(ROOT / "docker-compose.yml").read_text())
    images = {service["image"] for service in compose["services"].values() if "build" in service}
    for deployment in overlay.of_kind("Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert {container["image"]} == images
