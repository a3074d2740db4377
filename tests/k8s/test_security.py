"""Every pod runs as a non-root user without privileges, capabilities or an API token; the
services' root file systems are read-only."""

from __future__ import annotations

import re

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
