"""Composition root of the retrain service: settings in, a running service out."""

from __future__ import annotations

from pathlib import Path

from flywheel.retrain.v1 import retrain_pb2_grpc
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.artifact_cache import ArtifactFetcher
from flywheel_common.consumer import EventConsumer
from flywheel_common.db import Database
from flywheel_common.grpc_server import ServiceBinding
from flywheel_common.migrations import SchemaMigration
from flywheel_common.outbox import Outbox, relays
from flywheel_common.publisher import EventPublisher
from flywheel_common.registry_client import RegistryClient
from flywheel_common.service import Component, Service, TopicProvisioner, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_common.topics import DRIFT_ALERTS, MODEL_METRICS
from flywheel_retrain.consumers import alert_follower, window_follower
from flywheel_retrain.engine import RunEngine
from flywheel_retrain.executors import Executor, LocalExecutor
from flywheel_retrain.grpc_api import METHOD_ROLES, SERVICE_NAME, RetrainServicer
from flywheel_retrain.handlers import Retrainer
from flywheel_retrain.kubernetes import KubernetesExecutor
from flywheel_retrain.logs import LogReader
from flywheel_retrain.pipeline import PipelineSettings, RunPipeline
from flywheel_retrain.settings import RetrainSettings

MIGRATIONS = Path(__file__).with_name("migrations")
EXECUTOR_KINDS = {"local": pb.EXECUTOR_KIND_LOCAL, "kubernetes": pb.EXECUTOR_KIND_KUBERNETES}


def build(settings: ServiceSettings | None = None) -> Service:
    """Wire the retrain trigger: database and outbox, executors, consumers, engine, gRPC."""
    config = settings if isinstance(settings, RetrainSettings) else RetrainSettings()
    database = Database(config.database_url(), config.database.echo)
    outbox = Outbox(source=config.service_name)
    registry = RegistryClient(config.registry_address, config.registry_token)
    retrainer = Retrainer(database, outbox, registry, EXECUTOR_KINDS[config.executor])
    executors: dict[int, Executor] = {
        pb.EXECUTOR_KIND_LOCAL: LocalExecutor(config.training_workdir),
        pb.EXECUTOR_KIND_KUBERNETES: KubernetesExecutor(config.kubernetes),
    }
    pipeline = RunPipeline(
        retrainer,
        registry,
        LogReader(config.kafka, config.predictions_topic, config.ground_truth_topic),
        ArtifactFetcher(registry, config.data_dir / "artifacts"),
        executors,
        PipelineSettings(
            runs_dir=config.runs_dir.resolve(),
            registry_address=config.registry_address,
            registry_token=config.registry_token,
            training_timeout_seconds=config.training_timeout_seconds,
            log_tail_lines=config.log_tail_lines,
        ),
    )
    engine = RunEngine(
        retrainer, pipeline, config.max_parallel_runs, config.reconcile_interval_seconds
    )
    retrainer.on_change = engine.poke

    # Cancelling the run's task stops its job: executors end their job when cancelled.
    retrainer.on_cancel = engine.cancel
    publisher = EventPublisher(config.kafka, source=config.service_name)
    group = config.consumer_group or config.service_name

    components: list[Component] = []
    if config.kafka.provision_topics:
        components.append(TopicProvisioner(config))
    components += [SchemaMigration(database, MIGRATIONS), registry, publisher]
    components += relays(database, outbox, publisher, config.outbox)
    components += [
        EventConsumer(
            config.kafka,
            group_id=f"{group}.alerts",
            topics=[DRIFT_ALERTS.name],
            handler=alert_follower(retrainer),
            dead_letters=publisher,
            from_beginning=False,
        ),
        EventConsumer(
            config.kafka,
            group_id=f"{group}.metrics",
            topics=[MODEL_METRICS.name],
            handler=window_follower(retrainer, database),
            dead_letters=publisher,
            from_beginning=False,
        ),
        engine,
    ]
    binding = ServiceBinding(
        SERVICE_NAME,
        retrain_pb2_grpc.add_RetrainServiceServicer_to_server,
        RetrainServicer(retrainer, config.runs_dir.resolve(), config.log_tail_lines),
        METHOD_ROLES,
    )
    return Service(config, [binding], components)


def main() -> None:
    run_service(RetrainSettings(), build)
