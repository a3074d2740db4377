import pytest

from flywheel_common.topics import ALL_TOPICS, DEPLOYMENTS, DLQ, PREDICTIONS, with_retention


def test_retention_is_replaced_only_for_the_topics_named() -> None:
    specs = with_retention(ALL_TOPICS, {PREDICTIONS.name: 3_600_000, DLQ.name: -1})
    retention = {spec.name: spec.retention_ms for spec in specs}
    assert retention[PREDICTIONS.name] == 3_600_000
    assert retention[DLQ.name] == -1
    assert retention[DEPLOYMENTS.name] is None  # compacted: no retention
    named = (PREDICTIONS.name, DLQ.name)
    assert [s for s in specs if s.name not in named] == [
        s for s in ALL_TOPICS if s.name not in named
    ]


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"flywheel.prediction": 1000}, "'flywheel.prediction', which is not a Flywheel topic"),
        ({DEPLOYMENTS.name: 1000}, "flywheel.deployments is compacted"),
        ({PREDICTIONS.name: 0}, "must be a positive number of milliseconds or -1"),
        ({PREDICTIONS.name: -5}, "must be a positive number of milliseconds or -1"),
    ],
)
def test_a_retention_that_cannot_apply_is_refused_with_what_to_fix(
    retention: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        with_retention(ALL_TOPICS, retention)
