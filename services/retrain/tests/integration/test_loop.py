"""The loop closes: a drift alert becomes a gated, promoted candidate that the deployer rolls
out; failures, worse candidates and alert bursts end as the policy says."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.duration_pb2 import Duration

from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.retrain.v1 import events_pb2 as retrain_events
from flywheel.retrain.v1 import retrain_pb2 as retrain_pb
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_testing.kafka import client_options
from flywheel_testing.waiting import eventually

from .conftest import Loop, breast_cancer

HOLDOUT = 100


def _duration(delta: timedelta) -> Duration:
    message = Duration()
    message.FromTimedelta(delta)
    return message


def _gate(min_improvement: float = 0.0) -> pb.EvaluationGate:
    return pb.EvaluationGate(
        metric="accuracy",
        goal=pb.METRIC_GOAL_MAXIMIZE,
        min_improvement=min_improvement,
        holdout_size=HOLDOUT,
    )


async def test_a_drift_alert_ends_in_a_better_version_rolled_out(loop: Loop) -> None:
    await loop.set_policy(gate=_gate(0.05), cooldown=_duration(timedelta(0)))
    shifted, labels = breast_cancer(shift_sigmas=1.0)
    await loop.log_traffic(shifted, labels)
    alert_id = await loop.alert()

    run = await loop.wait_run({pb.RUN_STATE_PROMOTED, pb.RUN_STATE_FAILED, pb.RUN_STATE_REJECTED})
    assert run.state == pb.RUN_STATE_PROMOTED, run.error
    assert run.trigger.kind == pb.TRIGGER_KIND_DRIFT_ALERT
    assert run.trigger.source_id == alert_id
    assert run.base_version == 1
    assert run.candidate_version == 2
    # Training data: the logged rows not held out, plus production's own training data.
    assert run.dataset.logged_row_count == len(labels) - HOLDOUT
    assert run.dataset.row_count == run.dataset.logged_row_count + len(labels)
    dataset_file = Path(run.dataset.uri.removeprefix("file://"))
    dataset_bytes = await asyncio.to_thread(dataset_file.read_bytes)
    assert hashlib.sha256(dataset_bytes).hexdigest() == run.dataset.sha256
    assert run.dataset.production_dataset_sha256

    lineage = (await loop.version(2)).lineage
    assert lineage.triggered_by == f"drift-alert:{alert_id}"
    assert lineage.dataset_sha256 == run.dataset.sha256
    assert lineage.retrain_run_id == run.run_id
    assert lineage.parent_version == 1

    # The production model fails on the shifted inputs; the retrained one does not.
    assert run.gate.decision == pb.GATE_DECISION_PASSED
    assert run.gate.holdout_size == HOLDOUT
    assert run.gate.production_value < 0.7 < 0.85 < run.gate.candidate_value
    assert await loop.production() == 2

    async def rolled_out() -> bool:
        return any(r.version == 2 for r in await loop.rollouts())

    await eventually(rolled_out, 90)
    [rollout] = [r for r in await loop.rollouts() if r.version == 2]
    assert rollout.trigger == deployer_types.ROLLOUT_TRIGGER_PROMOTION

    async def announced() -> bool:
        return bool(loop.of_type("CandidateGated"))

    await eventually(announced, 30)
    names = [type(e).__name__ for e in loop.events]
    assert names == ["RetrainRequested", "RetrainStarted", "RetrainSucceeded", "CandidateGated"]
    [gated] = loop.of_type("CandidateGated")
    assert gated.outcome == retrain_events.CANDIDATE_OUTCOME_PROMOTED
    assert gated.candidate_version == 2
    assert gated.production_version == 1

    response = await loop.api.GetRun(retrain_pb.GetRunRequest(run_id=run.run_id))
    assert any("registered" in line for line in response.log_tail)


async def test_a_concept_change_is_learnt_from_the_rows_since_it_once_there_are_enough(
    loop: Loop,
) -> None:
    """The world's answer flips at a moment the alert names: a candidate that learnt older
    rows or the production version's data would still answer the old way. Once four times
    the rows it learnt from have been labelled since the change, the version is trained
    again on all of them, once."""
    await loop.set_policy(
        gate=_gate(0.05),
        cooldown=_duration(timedelta(0)),
        training_data=pb.TrainingDataConfig(
            include_production_dataset=True, since_change=True, min_rows_since_change=200
        ),
    )
    features, labels = breast_cancer()
    await loop.log_traffic(features[:200], labels[:200])
    await asyncio.sleep(0.05)  # the change begins strictly after the old rows were logged
    began = datetime.now(UTC)
    await loop.log_traffic(features[200:400], 1 - labels[200:400])
    await loop.alert(change_began_at=began)

    waiting = await loop.wait_run({pb.RUN_STATE_PREPARING_DATA})
    await asyncio.sleep(3)  # 100 rows beside the holdout: the run must not train yet
    [still] = await loop.runs()
    assert still.state == pb.RUN_STATE_PREPARING_DATA
    assert not still.HasField("dataset")

    await loop.log_traffic(features[400:], 1 - labels[400:])
    run = await loop.wait_run({pb.RUN_STATE_PROMOTED, pb.RUN_STATE_FAILED, pb.RUN_STATE_REJECTED})
    assert run.run_id == waiting.run_id
    assert run.state == pb.RUN_STATE_PROMOTED, run.error
    assert run.trigger.change_began_at.ToDatetime(UTC) == began
    assert run.dataset.window_start.ToDatetime(UTC) == began
    assert run.dataset.logged_row_count == len(labels) - 200 - HOLDOUT
    assert run.dataset.row_count == run.dataset.logged_row_count
    assert not run.dataset.production_dataset_sha256
    assert run.gate.production_value < 0.2 < 0.85 < run.gate.candidate_value

    learnt = run.dataset.logged_row_count
    await loop.metrics_window(accuracy=0.99, labeled=4 * learnt - 1, version=2)
    await loop.metrics_window(accuracy=0.99, labeled=1, version=2)

    async def followed_up() -> bool:
        return len(await loop.runs()) == 2

    await eventually(followed_up, 60, poll=0.2)
    follow_up = next(r for r in await loop.runs() if r.run_id != run.run_id)
    assert follow_up.trigger.kind == pb.TRIGGER_KIND_FOLLOW_UP
    assert follow_up.trigger.source_id == run.run_id
    assert follow_up.base_version == 2
    assert follow_up.trigger.change_began_at.ToDatetime(UTC) == began
    # What it learns from and how the gate takes it are the unit tests' (test_use_cases):
    # a second training job here would add its 15 s to the suite for nothing new.
    await loop.api.CancelRun(retrain_pb.CancelRunRequest(run_id=follow_up.run_id))


async def test_a_failing_training_job_is_retried_then_fails_without_promotion(loop: Loop) -> None:
    await loop.set_policy(
        gate=_gate(),
        executor=pb.ExecutorConfig(
            max_retries=1,
            entrypoint_override="python -c \"print('out of memory'); raise SystemExit(3)\"",
        ),
    )
    await loop.log_traffic(*breast_cancer(shift_sigmas=1.0))
    await loop.alert()

    run = await loop.wait_run({pb.RUN_STATE_FAILED, pb.RUN_STATE_PROMOTED, pb.RUN_STATE_REJECTED})
    assert run.state == pb.RUN_STATE_FAILED
    assert run.attempt == 2
    assert "exited with code 3" in run.error

    async def both_failures() -> bool:
        return len(loop.of_type("RetrainFailed")) == 2

    await eventually(both_failures, 30)
    first, last = loop.of_type("RetrainFailed")
    assert first.will_retry
    assert not last.will_retry
    assert last.stage == retrain_events.FAILURE_STAGE_TRAINING
    assert "out of memory" in last.log_tail
    assert len(loop.of_type("RetrainStarted")) == 2
    assert not loop.of_type("CandidateGated")
    assert await loop.production() == 1
    assert await loop.versions() == [1]


async def test_a_worse_candidate_is_rejected_by_the_gate(loop: Loop) -> None:
    await loop.set_policy(
        gate=_gate(),
        executor=pb.ExecutorConfig(
            entrypoint_override="python -m flywheel_examples.breast_cancer --estimator stump"
        ),
    )
    await loop.log_traffic(*breast_cancer(shift_sigmas=0.0))
    await loop.alert()

    run = await loop.wait_run({pb.RUN_STATE_REJECTED, pb.RUN_STATE_PROMOTED, pb.RUN_STATE_FAILED})
    assert run.state == pb.RUN_STATE_REJECTED, run.error
    assert run.gate.decision == pb.GATE_DECISION_FAILED
    assert run.gate.candidate_value < run.gate.production_value
    assert "rejected by the gate" in run.error
    assert await loop.production() == 1
    assert (await loop.version(2)).lineage.retrain_run_id == run.run_id

    async def gated() -> bool:
        return bool(loop.of_type("CandidateGated"))

    await eventually(gated, 30)
    assert loop.of_type("CandidateGated")[0].outcome == (
        retrain_events.CANDIDATE_OUTCOME_REJECTED_BY_GATE
    )


async def test_a_burst_of_alerts_starts_one_run(loop: Loop) -> None:
    await loop.set_policy(
        cooldown=_duration(timedelta(hours=1)),
        executor=pb.ExecutorConfig(entrypoint_override='python -c "raise SystemExit(1)"'),
    )
    await loop.log_traffic(*breast_cancer(shift_sigmas=1.0))
    first = await loop.alert()
    for index in range(99):
        # Distinct alerts and redeliveries of the first one, as fast as Kafka takes them.
        await loop.alert(first if index % 10 == 0 else "")
    await loop.wait_run({pb.RUN_STATE_FAILED})
    await loop.alert()  # once this one is committed, every burst alert was handled

    async def all_consumed() -> bool:
        return bool(loop.of_type("RetrainFailed")) and await _consumed(loop)

    await eventually(all_consumed, 90)
    runs = await loop.runs()
    assert len(runs) == 1
    assert runs[0].trigger.source_id == first
    assert len(loop.of_type("RetrainRequested")) == 1

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await loop.api.TriggerRetrain(retrain_pb.TriggerRetrainRequest(model=loop.model))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cooling down" in (refused.value.details() or "")


async def _consumed(loop: Loop) -> bool:
    """Whether the trigger's alert consumer has committed everything published so far."""
    assert loop.retrain is not None
    group = f"{loop.retrain.settings.consumer_group}.alerts"  # type: ignore[attr-defined]
    admin = AIOKafkaAdminClient(**client_options(loop.platform.kafka_bootstrap))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**client_options(loop.platform.kafka_bootstrap))
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(committed))
    finally:
        await consumer.stop()
    return bool(committed) and all(committed[p].offset >= ends[p] for p in committed)


async def test_accuracy_decaying_over_consecutive_windows_starts_a_run(loop: Loop) -> None:
    await loop.set_policy(
        alert_trigger=pb.AlertTrigger(enabled=False),
        decay_trigger=pb.DecayTrigger(
            enabled=True,
            metric=pb.DECAY_METRIC_ACCURACY,
            threshold=0.8,
            consecutive_windows=2,
            min_labeled_count=50,
        ),
        min_new_labeled_samples=100,
        cooldown=_duration(timedelta(0)),
        executor=pb.ExecutorConfig(entrypoint_override='python -c "raise SystemExit(1)"'),
    )
    await loop.log_traffic(*breast_cancer(shift_sigmas=1.0))
    await loop.alert()  # alerts are switched off by this policy
    await loop.metrics_window(accuracy=0.95, labeled=80)
    await loop.metrics_window(accuracy=0.6, labeled=80)
    await loop.metrics_window(accuracy=0.9, labeled=80)  # the streak breaks
    await loop.metrics_window(accuracy=0.55, labeled=10)  # too few labels to count
    await loop.metrics_window(accuracy=0.6, labeled=80)
    last = await loop.metrics_window(accuracy=0.5, labeled=80)

    run = await loop.wait_run({pb.RUN_STATE_FAILED, pb.RUN_STATE_PROMOTED})
    assert run.trigger.kind == pb.TRIGGER_KIND_METRIC_DECAY
    assert run.trigger.source_id == last
    assert run.trigger.triggered_by == f"metric-decay:{last}"
    assert len(await loop.runs()) == 1
