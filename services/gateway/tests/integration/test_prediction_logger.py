"""The prediction logger keeps logging when one log cannot be built or cannot go to Kafka."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import numpy as np

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_gateway.journal import Journal
from flywheel_gateway.predictions import KAFKA_RECORD_LIMIT, PredictionLogger

from .test_serving import prediction_logs


def prediction(model: str, request_id: str, features: int = 4) -> PredictionLog:
    rows = np.ones((1, features), np.float32)
    return PredictionLog(
        request_id=request_id,
        model=model,
        version=1,
        inputs=[Tensor(name="x", datatype="FP32", shape=[1, features], data=rows.tobytes())],
    )


async def nothing_in_kafka(since: datetime) -> set[str]:
    return set()


def broken() -> PredictionLog:
    raise KeyError("UINT4")  # say, an output datatype the log cannot express


async def test_a_log_that_fails_to_build_or_is_too_large_for_kafka_stops_no_other(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    model = f"logger-{uuid.uuid4().hex[:8]}"
    publisher = EventPublisher(KafkaSettings(bootstrap_servers=kafka_bootstrap), "test")
    await publisher.start()
    journal = Journal(tmp_path / "journal", max_bytes=64 * 1024 * 1024)
    logger = PredictionLogger(publisher, journal, nothing_in_kafka, retry_seconds=0.1)
    await logger.start()
    try:
        huge_features = KAFKA_RECORD_LIMIT // 4 + 1
        logger.log(lambda: prediction(model, "before"))
        logger.log(broken)
        logger.log(lambda: prediction(model, "huge", features=huge_features))
        logger.log(lambda: prediction(model, "after"))
        logs = await prediction_logs(kafka_bootstrap, model, at_least=2)
        assert sorted(log.request_id for log in logs) == ["after", "before"]
        # Later logs still flow, and nothing waits in the journal for a retry that would
        # fail forever.
        logger.log(lambda: prediction(model, "later"))
        logs = await prediction_logs(kafka_bootstrap, model, at_least=3)
        assert sorted(log.request_id for log in logs) == ["after", "before", "later"]
        assert journal.empty
    finally:
        await logger.stop()
        await publisher.stop()
