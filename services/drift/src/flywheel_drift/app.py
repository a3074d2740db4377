"""Composition root of the drift detector: settings in, a running service out."""

from __future__ import annotations

import gc
from pathlib import Path

from opentelemetry import metrics

from flywheel.drift.v1 import drift_pb2_grpc
from flywheel_common.foundation import Foundation
from flywheel_common.grpc_server import ServiceBinding
from flywheel_common.identities import Authenticator
from flywheel_common.publisher import EventPublisher
from flywheel_common.registry_client import RegistryClient
from flywheel_common.service import Service, instance_id, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_common.topics import MODEL_EVENTS
from flywheel_drift.gauges import p_values
from flywheel_drift.grpc_api import METHOD_ROLES, METHOD_SCOPES, SERVICE_NAME, DriftServicer
from flywheel_drift.handlers import Detector
from flywheel_drift.monitors import MonitorConfigs, load_profile
from flywheel_drift.profiles import ReferenceProfile
from flywheel_drift.queries import DriftQueries
from flywheel_drift.references import ReferenceProfiles, promotion_prefetcher
from flywheel_drift.report_server import ReportServer
from flywheel_drift.reports import Reports
from flywheel_drift.settings import DriftSettings
from flywheel_drift.stream import DriftStream

MIGRATIONS = Path(__file__).with_name("migrations")


def build(
    settings: ServiceSettings | None = None,
    *,
    registry: RegistryClient | None = None,
    publisher: EventPublisher | None = None,
) -> Service:
    """Wire the drift detector: registry client, detector, the faust stream, gRPC.
    `registry` and `publisher` replace the registry client and the Kafka publisher."""
    config = settings if isinstance(settings, DriftSettings) else DriftSettings()
    tune_garbage_collection(config.gc_first_generation)
    foundation = Foundation(config, MIGRATIONS, publisher)
    registry = registry or RegistryClient.of(config)
    configs = MonitorConfigs(
        config.window_size, foundation.database, config.monitor_config_refresh_seconds
    )

    async def profile(model: str, version: int) -> ReferenceProfile:
        return await load_profile(registry, configs, model, version)

    profiles = ReferenceProfiles(profile)
    queries = DriftQueries(foundation.database)
    reports = (
        ReportServer(
            config.report,
            config.grpc.host,
            config.grpc.tls,
            Authenticator(config.auth, "FLYWHEEL_DRIFT_"),
            Reports(queries, profiles.get),
        )
        if config.report.port >= 0
        else None
    )

    def new_detector() -> Detector:
        return Detector(
            profiles.get,
            configs.monitor,
            config.label_wait_seconds,
            report_link=reports.link if reports is not None else None,
        )

    stream = DriftStream(
        config.kafka,
        config.group(),
        new_detector,
        foundation.publisher,
        foundation.database,
        foundation.outbox,
        replica=instance_id(config),
        alerts_kept=config.max_alerts_kept,
        batch_size=config.batch_size,
        prediction_batch_size=config.prediction_batch_records,
        late_seconds=config.late_prediction_seconds,
        session_timeout=config.session_timeout_seconds,
        data_dir=config.data_dir / "faust",
    )
    metrics.get_meter(__name__).create_observable_gauge(
        "flywheel.drift.p_value",
        callbacks=[p_values(stream.partitions)],
        description="Adjusted p-value of each feature in its version's latest window",
    )
    # Every replica prefetches every promoted version (any may come to hold its partition):
    # a group of its own, following model events from its start on.
    prefetcher = foundation.consumer(
        [MODEL_EVENTS.name],
        promotion_prefetcher(profiles),
        group=f"references.{instance_id(config)}",
        from_beginning=False,
    )
    # The reports start before the stream: its alerts link them.
    served = [reports] if reports is not None else []
    components = [*foundation.components(), configs, registry, prefetcher, *served, stream]
    binding = ServiceBinding(
        SERVICE_NAME,
        drift_pb2_grpc.add_DriftServiceServicer_to_server,
        DriftServicer(queries, configs),
        METHOD_ROLES,
        METHOD_SCOPES,
    )
    return Service(config, [binding], components)


def tune_garbage_collection(first_generation: int) -> None:
    """Process-wide: the detector is the process's hot path (see the setting)."""
    gc.set_threshold(first_generation, *gc.get_threshold()[1:])


def main() -> None:
    run_service(DriftSettings(), build)
