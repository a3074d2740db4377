"""Logged predictions and ground truth of one model, read back from Kafka."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from google.protobuf.message import Message

from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.events import EventTypes, Headers, MalformedEvent, decode_event
from flywheel_common.prediction_logs import ground_truth_label, input_rows, unpack
from flywheel_common.settings import KafkaSettings
from flywheel_common.topic_scan import records_since
from flywheel_retrain.datasets import LoggedPrediction

log = logging.getLogger(__name__)
_Event = TypeVar("_Event", bound=Message)


class LogReader:
    def __init__(self, kafka: KafkaSettings, predictions_topic: str, ground_truth_topic: str):
        self._kafka = kafka
        self._predictions = predictions_topic
        self._ground_truth = ground_truth_topic
        self._types = EventTypes.flywheel()

    async def predictions(self, model: str, since: datetime) -> list[LoggedPrediction]:
        """Successful, non-shadow predictions of `model` logged since `since`, one row each
        (requests of several rows are skipped: their ground truth names one label)."""
        found: dict[str, LoggedPrediction] = {}
        key = model.encode()
        async with contextlib.aclosing(
            records_since(self._kafka, self._predictions, since)
        ) as records:
            async for record in records:
                if record.key != key:
                    continue
                for prediction in self._predictions_in(record.headers, record.value):
                    if prediction.shadow or prediction.status_code != 0:
                        continue
                    try:
                        rows = input_rows(prediction)
                    except ValueError:  # a non-numeric or misshaped input: not training data
                        continue
                    if rows.shape[0] != 1:
                        continue
                    found[prediction.request_id] = LoggedPrediction(
                        prediction.request_id,
                        rows[0],
                        prediction.received_at.ToMicroseconds() / 1e6,
                    )
        return list(found.values())

    async def labels(self, model: str, since: datetime, request_ids: set[str]) -> dict[str, str]:
        """Ground truth since `since` for the given requests (the newest label wins)."""
        labels: dict[str, str] = {}
        async with contextlib.aclosing(
            records_since(self._kafka, self._ground_truth, since)
        ) as records:
            async for record in records:
                truth = self._decode(record.headers, record.value, GroundTruth)
                if truth is None or truth.request_id not in request_ids:
                    continue
                if truth.model and truth.model != model:
                    continue
                label = ground_truth_label(truth)
                if label is not None:
                    labels[truth.request_id] = label
        return labels

    def _predictions_in(
        self, headers: Headers | None, value: bytes | None
    ) -> Sequence[PredictionLog]:
        message = self._decode(headers, value, Message)
        try:
            return unpack(message) if message is not None else ()
        except ValueError:
            return ()

    def _decode(
        self, headers: Headers | None, value: bytes | None, kind: type[_Event]
    ) -> _Event | None:
        try:
            envelope = decode_event(headers or (), value, self._types)
        except MalformedEvent as error:
            # The detector dead-letters these; the dataset simply leaves them out.
            log.debug("skipping a malformed record: %s", error)
            return None
        return envelope.message if isinstance(envelope.message, kind) else None
