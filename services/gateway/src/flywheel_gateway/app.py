"""Composition root of the gateway: settings in, a serving gateway out."""

from __future__ import annotations

from flywheel_common.artifact_cache import ArtifactFetcher
from flywheel_common.foundation import Foundation
from flywheel_common.grpc_server import ServiceBinding
from flywheel_common.identities import Authenticator
from flywheel_common.registry_client import RegistryClient
from flywheel_common.service import Service, instance_id, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_common.table_reader import CaughtUp
from flywheel_common.topics import DEPLOYMENTS
from flywheel_common.wakeup import Wakeup
from flywheel_gateway.batching import BatchPolicy
from flywheel_gateway.consumers import DeploymentFollower, RoutingSettled
from flywheel_gateway.grpc_api import METHOD_ROLES, METHOD_SCOPES, SERVICE_NAME, InferenceServicer
from flywheel_gateway.handlers import Inference, InferenceSettings
from flywheel_gateway.http_api import RestApi
from flywheel_gateway.models import ModelManager, RuntimeOptions
from flywheel_gateway.predictions import PredictionLogger
from flywheel_gateway.routing import RoutingTable
from flywheel_gateway.settings import GatewaySettings
from flywheel_gateway.shipper import ShipperConfig
from flywheel_gateway.shipper_process import ShipperProcess
from flywheel_gateway.spool import SpoolWriter
from flywheel_gateway.status import StatusReporter
from flywheel_gateway.workers import run_workers
from inference import grpc_service_pb2_grpc


def build(settings: ServiceSettings | None = None) -> Service:
    config = settings if isinstance(settings, GatewaySettings) else GatewaySettings()
    gateway_id = config.gateway_id or instance_id(config)
    foundation = Foundation(config)
    status_changed = Wakeup()
    fetcher = ArtifactFetcher(RegistryClient.of(config), config.artifact_cache())
    routes: dict[str, RoutingTable] = {}
    models = ModelManager(
        fetcher,
        RuntimeOptions(
            provider=config.execution_provider,
            intra_op_threads=config.intra_op_threads,
            inter_op_threads=config.inter_op_threads,
            thread_spinning=config.thread_spinning,
            batch=BatchPolicy(
                max_batch_size=config.max_batch_size,
                max_queue_delay_seconds=config.max_queue_delay_ms / 1000,
                preferred_batch_sizes=tuple(config.preferred_batch_sizes),
            ),
        ),
        on_change=status_changed,
    )
    follower = DeploymentFollower(routes, models, fetcher, on_applied=status_changed)
    service: Service  # bound below; the reporter asks for its address only once serving
    reporter = StatusReporter(
        foundation.publisher,
        models,
        follower,
        gateway_id,
        config.heartbeat_seconds,
        status_changed,
        address=lambda: service.grpc.address,
    )
    logger = (
        PredictionLogger(
            SpoolWriter(config.spool_path(), config.prediction_journal_bytes),
            config.prediction_sample_rate,
            fsync_interval_ms=config.prediction_journal_fsync_interval_ms,
        )
        if config.log_predictions
        else None
    )
    inference = Inference(
        models,
        routes,
        logger,
        InferenceSettings(config.max_request_batch, config.non_finite_inputs, gateway_id),
    )
    reader = foundation.table(DEPLOYMENTS.name, follower.apply, replica=gateway_id)
    components = [*foundation.components(), models]
    if logger is not None:
        # Stopped in reverse: the spool closes, then its shipper sends what it holds.
        components += [ShipperProcess(shipper_config(config)), logger]
    # Ready only once the routing table is read to its end and the versions it routes to
    # are warm: a restarted replica never answers NOT_FOUND for a model that is deployed.
    components += [reader, CaughtUp(reader), RoutingSettled(follower), reporter]
    if config.http.port >= 0:
        components.append(
            RestApi(
                config.http,
                config.grpc,
                Authenticator(config.auth, "FLYWHEEL_GATEWAY_"),
                inference,
                lambda: service.serving,
            )
        )
    servicer = InferenceServicer(inference, lambda: service.serving)
    binding = ServiceBinding(
        SERVICE_NAME,
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        servicer,
        METHOD_ROLES,
        METHOD_SCOPES,
        before_ready=frozenset({"ServerLive", "ServerReady"}),
    )
    service = Service(config, [binding], components)
    return service


def shipper_config(config: GatewaySettings) -> ShipperConfig:
    return ShipperConfig(
        kafka=config.kafka.model_copy(update={"linger_ms": config.prediction_linger_ms}),
        spool=config.spool_path(),
        journal=config.journal_path(),
        source=config.service_name,
        client_id=f"{config.service_name}-predictions",
        logs_per_record=config.prediction_logs_per_record,
        max_logs=config.prediction_buffer,
        drain_seconds=min(10.0, config.component_stop_timeout_seconds / 2),
        service_name=config.service_name,
        log_level=config.telemetry.log_level,
        log_json=config.telemetry.log_json,
        event_loop=config.event_loop,
    )


def main() -> None:
    settings = GatewaySettings()
    if settings.workers > 1:
        raise SystemExit(run_workers(settings))
    run_service(settings, build)
