"""Ground truth on its way to its prediction: checked when read from the ground-truth topic,
and forwarded packed, one record per model and batch, to the topic co-partitioned with the
predictions.

Data platforms send one label per record, keyed by request id. Forwarding each as it came
made the detector read and decode every label twice, record by record; a packed forward is
read back as one record, decoded in one parse, and its labels apply together in the
checkpoint of that record.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from flywheel.drift.v1.ground_truth_pb2 import GroundTruth, GroundTruthBatch
from flywheel_common.events import OutgoingRecord
from flywheel_common.prediction_logs import MAX_RECORD_BYTES, pack_per_model
from flywheel_common.topics import TopicSpec

LABELS_PER_RECORD = 1000


def routable(message: Message) -> Sequence[GroundTruth]:
    """The label a ground-truth record carries, if the detector can route it (ValueError
    says why not)."""
    if not isinstance(message, GroundTruth):
        raise ValueError(f"expected {GroundTruth.DESCRIPTOR.full_name}")
    if not message.model:
        raise ValueError(
            "its `model` is empty: set it to the model that made the prediction, by which "
            "the label is routed to the replica that holds the prediction"
        )
    return (message,)


def forwarded(
    topic: TopicSpec,
    truths: Sequence[GroundTruth],
    *,
    source: str,
    per_record: int = LABELS_PER_RECORD,
    max_bytes: int = MAX_RECORD_BYTES,
) -> list[OutgoingRecord]:
    """The labels as records of `topic`: a `GroundTruthBatch` per model of at most
    `per_record` labels and, unless one label alone is larger, `max_bytes`, keyed by the
    model; each model's labels in the order given."""
    packed = pack_per_model(
        truths,
        lambda part, model: topic.record(
            GroundTruthBatch(labels=part), source=source, subject=model
        ),
        per_record=per_record,
        max_bytes=max_bytes,
    )
    return [record for record, _ in packed]


def carried(message: Message) -> Sequence[GroundTruth]:
    """The labels a record of the forwarded topic carries: a batch, or one label (as
    forwarded before labels were packed)."""
    if isinstance(message, GroundTruthBatch):
        return message.labels
    if isinstance(message, GroundTruth):
        return (message,)
    raise ValueError(
        f"expected {GroundTruthBatch.DESCRIPTOR.full_name} or {GroundTruth.DESCRIPTOR.full_name}"
    )
