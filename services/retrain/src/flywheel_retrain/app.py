"""Composition root of the retrain service: settings in, a running service out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path

from flywheel.retrain.v1 import retrain_pb2_grpc
from flywheel_common.artifact_cache import ArtifactFetcher
from flywheel_common.foundation import Foundation
from flywheel_common.grpc_server import ServiceBinding
from flywheel_common.publisher import EventPublisher
from flywheel_common.registry_client import RegistryClient
from flywheel_common.service import Service, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_common.topics import DRIFT_ALERTS, MODEL_METRICS
from flywheel_common.wakeup import Wakeup
from flywheel_retrain.consumers import alert_follower, window_follower
from flywheel_retrain.domain import ExecutorKind
from flywheel_retrain.engine import RunEngine, RunTasks
from flywheel_retrain.executors import Executor, LocalExecutor
from flywheel_retrain.grpc_api import METHOD_ROLES, METHOD_SCOPES, SERVICE_NAME, RetrainServicer
from flywheel_retrain.handlers.ports import Deps, utc_now
from flywheel_retrain.kubernetes import KubernetesExecutor
from flywheel_retrain.logs import LogReader
from flywheel_retrain.settings import RetrainSettings
from flywheel_retrain.steps import (
    HoldoutEvaluator,
    LoggedData,
    Registry,
    TrainingJobs,
    TrainingSettings,
)
from flywheel_retrain.storage import RetrainUnitOfWork

MIGRATIONS = Path(__file__).with_name("migrations")
EXECUTOR_KINDS = {"local": ExecutorKind.LOCAL, "kubernetes": ExecutorKind.KUBERNETES}


def build(
    settings: ServiceSettings | None = None,
    *,
    registry: RegistryClient | None = None,
    publisher: EventPublisher | None = None,
    executors: dict[ExecutorKind, Executor] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Service:
    """Wire the retrain trigger: database and outbox, executors, consumers, engine, gRPC.
    The keyword arguments replace the registry client, the Kafka publisher, the executors
    (by kind) and the clock."""
    config = settings if isinstance(settings, RetrainSettings) else RetrainSettings()
    foundation = Foundation(config, MIGRATIONS, publisher)
    registry = registry or RegistryClient.of(config)
    runs_dir = config.runs_dir.resolve()
    wakeup = Wakeup()
    tasks = RunTasks()
    deps = Deps(
        unit_of_work=partial(RetrainUnitOfWork, foundation.database, foundation.outbox),
        registry=Registry(registry),
        data=LoggedData(
            LogReader(config.kafka, config.predictions_topic, config.ground_truth_topic),
            registry,
            runs_dir,
        ),
        training=TrainingJobs(
            executors
            or {
                ExecutorKind.LOCAL: LocalExecutor(config.training_workdir),
                ExecutorKind.KUBERNETES: KubernetesExecutor(config.kubernetes),
            },
            registry,
            TrainingSettings(
                runs_dir=runs_dir,
                registry_address=config.registry_address,
                registry_token=config.registry_token,
                registry_tls=config.registry_tls,
                training_timeout_seconds=config.training_timeout_seconds,
                log_tail_lines=config.log_tail_lines,
            ),
        ),
        evaluator=HoldoutEvaluator(ArtifactFetcher(registry, config.data_dir / "artifacts")),
        default_executor=EXECUTOR_KINDS[config.executor],
        wakeup=wakeup,
        stop_run=tasks.cancel,
        clock=clock or utc_now,
    )
    # Every replica serves the API and consumes its share of events; the one holding the
    # lease executes runs and fires schedules, with writes fenced by the lease.
    leader_deps = replace(
        deps,
        unit_of_work=partial(
            RetrainUnitOfWork,
            foundation.database,
            foundation.outbox,
            fence=foundation.leader.fence,
        ),
    )
    engine = RunEngine(
        leader_deps,
        tasks,
        wakeup,
        config.max_parallel_runs,
        config.reconcile_interval_seconds,
        foundation.leader,
    )
    components = [
        *foundation.components(),
        registry,
        foundation.consumer(
            [DRIFT_ALERTS.name], alert_follower(deps), group="alerts", from_beginning=False
        ),
        foundation.consumer(
            [MODEL_METRICS.name], window_follower(deps), group="metrics", from_beginning=False
        ),
        engine,
    ]
    binding = ServiceBinding(
        SERVICE_NAME,
        retrain_pb2_grpc.add_RetrainServiceServicer_to_server,
        RetrainServicer(deps),
        METHOD_ROLES,
        METHOD_SCOPES,
    )
    return Service(config, [binding], components)


def main() -> None:
    run_service(RetrainSettings(), build)
