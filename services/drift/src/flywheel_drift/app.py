"""Composition root of the drift detector: settings in, a running service out."""

from __future__ import annotations

import gc
from pathlib import Path

from opentelemetry import metrics

from flywheel.drift.v1 import drift_pb2_grpc
from flywheel_common.db import Database
from flywheel_common.grpc_server import ServiceBinding
from flywheel_common.migrations import SchemaMigration
from flywheel_common.outbox import Outbox, relays
from flywheel_common.publisher import EventPublisher
from flywheel_common.registry_client import RegistryClient
from flywheel_common.service import Component, Service, TopicProvisioner, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_drift.engine import DriftEngine
from flywheel_drift.grpc_api import METHOD_ROLES, SERVICE_NAME, DriftServicer
from flywheel_drift.monitors import MonitorConfigs, load_profile
from flywheel_drift.profiles import ReferenceProfile
from flywheel_drift.settings import DriftSettings
from flywheel_drift.stream import DriftStream

MIGRATIONS = Path(__file__).with_name("migrations")


def build(settings: ServiceSettings | None = None) -> Service:
    """Wire the drift detector: registry client, engine, the faust stream, gRPC."""
    config = settings if isinstance(settings, DriftSettings) else DriftSettings()
    tune_garbage_collection(config.gc_first_generation)
    registry = RegistryClient(config.registry_address, config.registry_token)
    database = Database(config.database_url(), config.database.echo)
    configs = MonitorConfigs(config.window_size, database)

    async def profile(model: str, version: int) -> ReferenceProfile | None:
        return await load_profile(registry, configs, model, version)

    engine = DriftEngine(
        profile, configs.monitor, config.label_wait_seconds, config.max_alerts_kept
    )
    metrics.get_meter(__name__).create_observable_gauge(
        "flywheel.drift.p_value",
        callbacks=[engine.p_values],
        description="Adjusted p-value of each feature in its version's latest window",
    )
    publisher = EventPublisher(config.kafka, source=config.service_name)
    outbox = Outbox(source=config.service_name)
    stream = DriftStream(
        config.kafka,
        config.consumer_group or config.service_name,
        engine,
        publisher,
        database,
        outbox,
        config.batch_size,
        config.batch_seconds,
        config.prediction_batch_records,
        late_seconds=config.late_prediction_seconds,
        data_dir=config.data_dir / "faust",
    )
    components: list[Component] = []
    if config.kafka.provision_topics:
        components.append(TopicProvisioner(config))
    components += [SchemaMigration(database, MIGRATIONS), configs, registry, publisher]
    components += relays(database, outbox, publisher, config.outbox)
    components.append(stream)
    binding = ServiceBinding(
        SERVICE_NAME,
        drift_pb2_grpc.add_DriftServiceServicer_to_server,
        DriftServicer(engine, configs),
        METHOD_ROLES,
    )
    return Service(config, [binding], components)


def tune_garbage_collection(first_generation: int) -> None:
    """Process-wide: the detector is the process's hot path (see the setting)."""
    gc.set_threshold(first_generation, *gc.get_threshold()[1:])


def main() -> None:
    run_service(DriftSettings(), build)
