"""Prediction logs as a gateway would publish them, for tests of their consumers."""

from __future__ import annotations

import numpy as np

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.timestamps import duration, now


def prediction_log(model: str, index: int, version: int = 1) -> PredictionLog:
    """Request `{model}-{index}`: three FP32 features of one value (index % 7) in, class
    index % 2 out; a label of index % 2 makes it correct."""
    row = np.full((1, 3), float(index % 7), np.float32)
    return PredictionLog(
        request_id=f"{model}-{index}",
        model=model,
        version=version,
        inputs=[Tensor(name="features", datatype="FP32", shape=[1, 3], data=row.tobytes())],
        outputs=[
            Tensor(
                name="label",
                datatype="INT64",
                shape=[1],
                data=np.array([index % 2], np.int64).tobytes(),
            )
        ],
        latency=duration(0.001),
        received_at=now(),
    )
