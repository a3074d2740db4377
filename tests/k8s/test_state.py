"""Where state lives: Kafka and PostgreSQL on volume claims, Kafka's replication, every
stateful service on PostgreSQL."""

from __future__ import annotations

import pytest

from flywheel_testing.manifests import Manifest, Rendered

STATEFUL = ("registry", "deployer", "drift", "retrain")


def _config(rendered: Rendered, workload: Manifest) -> dict[str, str]:
    """The ConfigMap a workload's first container takes its environment from."""
    [source] = workload["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    return dict(rendered.named("ConfigMap", source["configMapRef"]["name"])["data"])


def test_every_statefulset_keeps_its_data_on_a_claim(overlay: Rendered) -> None:
    assert overlay.of_kind("StatefulSet")
    for statefulset in overlay.of_kind("StatefulSet"):
        claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
        assert claims
        [container] = statefulset["spec"]["template"]["spec"]["containers"]
        assert claims <= {mount["name"] for mount in container["volumeMounts"]}
        service = overlay.named("Service", statefulset["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None"


def test_prod_kafka_is_three_brokers_that_stay_writable_with_one_down(prod: Rendered) -> None:
    kafka = prod.named("StatefulSet", "flywheel-kafka")
    assert kafka["spec"]["replicas"] == 3
    config = _config(prod, kafka)
    assert config["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert config["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
    assert config["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
    assert config["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
    assert config["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
    for deployment in prod.of_kind("Deployment"):
        service = deployment["metadata"]["name"].removeprefix("flywheel-").upper()
        assert _config(prod, deployment)[f"FLYWHEEL_{service}_KAFKA__REPLICATION_FACTOR"] == "3"


def test_kafka_voters_are_the_pods_of_its_statefulset(overlay: Rendered) -> None:
    kafka = overlay.named("StatefulSet", "flywheel-kafka")
    brokers = kafka["spec"]["replicas"]
    config = _config(overlay, kafka)
    headless = kafka["spec"]["serviceName"]
    assert config["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",") == [
        f"{node}@flywheel-kafka-{node}.{headless}:9093" for node in range(brokers)
    ]
    [container] = kafka["spec"]["template"]["spec"]["containers"]
    node_id = {var["name"]: var for var in container["env"]}["KAFKA_NODE_ID"]
    assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    # No voter waits for another's readiness to start, or to be found.
    assert kafka["spec"]["podManagementPolicy"] == "Parallel"
    assert overlay.named("Service", headless)["spec"]["publishNotReadyAddresses"] is True
    assert int(config["KAFKA_DEFAULT_REPLICATION_FACTOR"]) <= brokers
    assert int(config["KAFKA_MIN_INSYNC_REPLICAS"]) <= int(
        config["KAFKA_DEFAULT_REPLICATION_FACTOR"]
    )


@pytest.mark.parametrize("service", STATEFUL)
def test_each_stateful_service_keeps_its_state_in_postgresql(
    overlay: Rendered, service: str
) -> None:
    deployment = overlay.named("Deployment", f"flywheel-{service}")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {var["name"]: var for var in container["env"]}
    reference = env[f"FLYWHEEL_{service.upper()}_DATABASE__URL"]["valueFrom"]["secretKeyRef"]
    secret = overlay.named("Secret", reference["name"])
    assert secret["data"][reference["key"]]
    assert not {"persistentVolumeClaim"} & {
        key for volume in deployment["spec"]["template"]["spec"]["volumes"] for key in volume
    }, "a service's pods share nothing but PostgreSQL and Kafka"


def test_the_registry_keeps_artifacts_in_its_database(overlay: Rendered) -> None:
    registry = overlay.named("Deployment", "flywheel-registry")
    assert _config(overlay, registry)["FLYWHEEL_REGISTRY_ARTIFACT_STORE"] == "database"
