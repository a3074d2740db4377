from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from flywheel_common.topics import (
    ALL_TOPICS,
    DEPLOYMENTS,
    GATEWAY_STATUS,
    PREDICTIONS,
    ensure_topics,
)


async def test_every_topic_exists_with_its_cleanup_policy(kafka_bootstrap: str) -> None:
    await ensure_topics(kafka_bootstrap)
    assert await ensure_topics(kafka_bootstrap) == []  # idempotent

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        names = set(await admin.list_topics())
        assert {spec.name for spec in ALL_TOPICS} <= names
        [described] = await admin.describe_topics([PREDICTIONS.name])
        assert len(described["partitions"]) == PREDICTIONS.partitions
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in ALL_TOPICS]
        )
        policies = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
            for response in responses
            for resource in response.resources
        }
    finally:
        await admin.close()
    assert policies[DEPLOYMENTS.name] == "compact"
    assert policies[GATEWAY_STATUS.name] == "compact"
    assert policies[PREDICTIONS.name] == "delete"
