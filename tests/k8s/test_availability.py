"""What keeps Flywheel serving through a pod's or a node's loss: replicas, disruption
budgets, the gateway's autoscaler, pods spread over nodes, rolling updates."""

from __future__ import annotations

import pytest

from flywheel_testing.manifests import Manifest, Rendered

SERVICES = ("registry", "deployer", "gateway", "drift", "retrain")


def _autoscaler(rendered: Rendered, workload: Manifest) -> Manifest | None:
    for autoscaler in rendered.of_kind("HorizontalPodAutoscaler"):
        target = autoscaler["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) == (workload["kind"], workload["metadata"]["name"]):
            return autoscaler
    return None


def _fewest_pods(rendered: Rendered, workload: Manifest) -> int:
    autoscaler = _autoscaler(rendered, workload)
    if autoscaler:
        return int(autoscaler["spec"].get("minReplicas", 1))
    return int(workload["spec"].get("replicas", 1))


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_runs_two_or_more_pods_in_prod(prod: Rendered, service: str) -> None:
    deployment = prod.named("Deployment", f"flywheel-{service}")
    assert _fewest_pods(prod, deployment) >= 2
    if _autoscaler(prod, deployment):
        assert "replicas" not in deployment["spec"], "each apply would reset the autoscaler"


def test_the_gateway_scales_on_cpu_in_prod(prod: Rendered) -> None:
    autoscaler = prod.named("HorizontalPodAutoscaler", "flywheel-gateway")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "flywheel-gateway",
    }
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"] >= 2
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    [container] = prod.named("Deployment", "flywheel-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["resources"]["requests"]["cpu"], "utilisation is measured against it"


def test_every_workload_of_several_pods_has_a_disruption_budget(overlay: Rendered) -> None:
    for workload in overlay.workloads():
        pods = _fewest_pods(overlay, workload)
        if pods < 2:
            continue
        labels = workload["spec"]["template"]["metadata"]["labels"]
        budgets = [
            budget
            for budget in overlay.of_kind("PodDisruptionBudget")
            if budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(budgets) == 1, f"{workload['metadata']['name']}: {len(budgets)} budgets"
        [budget] = budgets
        assert budget["spec"].get("maxUnavailable") == 1 or budget["spec"]["minAvailable"] < pods


def test_every_service_rolls_without_dropping_below_its_replicas(overlay: Rendered) -> None:
    for deployment in overlay.of_kind("Deployment"):
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }


def test_prod_spreads_each_services_pods_over_nodes(prod: Rendered) -> None:
    for deployment in prod.of_kind("Deployment"):
        constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        by_node = [c for c in constraints if c["topologyKey"] == "kubernetes.io/hostname"]
        assert by_node, deployment["metadata"]["name"]
        # Counting every Flywheel pod would let two of one service share a node.
        assert all(c["matchLabelKeys"] == ["app.kubernetes.io/name"] for c in by_node)
    kafka = prod.named("StatefulSet", "flywheel-kafka")["spec"]["template"]["spec"]
    [rule] = kafka["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
