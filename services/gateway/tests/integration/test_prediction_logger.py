"""Prediction logs go from the serving process's spool to Kafka through a shipper process of
its own; one log that cannot be built or is too large for Kafka stops no other."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.settings import KafkaSettings
from flywheel_gateway.predictions import KAFKA_RECORD_LIMIT, PredictionLogger
from flywheel_gateway.shipper import ShipperConfig
from flywheel_gateway.shipper_process import ShipperProcess
from flywheel_gateway.spool import SpoolWriter

from .test_serving import prediction_logs


def prediction(model: str, request_id: str, features: int = 4) -> bytes:
    rows = np.ones((1, features), np.float32)
    return PredictionLog(
        request_id=request_id,
        model=model,
        version=1,
        inputs=[Tensor(name="x", datatype="FP32", shape=[1, features], data=rows.tobytes())],
    ).SerializeToString()


def broken() -> bytes:
    raise KeyError("UINT4")  # say, an output datatype the log cannot express


async def test_logs_reach_kafka_through_the_shipper_and_a_bad_one_stops_no_other(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    model = f"logger-{uuid.uuid4().hex[:8]}"
    logger = PredictionLogger(SpoolWriter(tmp_path / "spool", max_bytes=64 * 1024 * 1024))
    shipper = ShipperProcess(
        ShipperConfig(
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, linger_ms=5),
            spool=tmp_path / "spool",
            journal=tmp_path / "predictions.journal",
            source="test",
            client_id="test-predictions",
            logs_per_record=200,
            max_logs=1000,
        )
    )
    await shipper.start()
    await logger.start()
    try:
        huge_features = KAFKA_RECORD_LIMIT // 4 + 1
        logger.log(lambda: prediction(model, "before"))
        logger.log(broken)
        logger.log(lambda: prediction(model, "huge", features=huge_features))
        logger.log(lambda: prediction(model, "after"))
        logs = await prediction_logs(kafka_bootstrap, model, at_least=2)
        assert sorted(log.request_id for log in logs) == ["after", "before"]
        logger.log(lambda: prediction(model, "later"))
        logs = await prediction_logs(kafka_bootstrap, model, at_least=3)
        assert sorted(log.request_id for log in logs) == ["after", "before", "later"]
    finally:
        await logger.stop()
        await shipper.stop()
    # Everything was shipped: only the newest segment is left, read to its end.
    assert len(list((tmp_path / "spool").glob("*.seg"))) == 1
