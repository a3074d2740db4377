"""A minimal MLServer runtime for the gateway benchmark: one ONNX file, onnxruntime on CPU.

MLServer ships no onnxruntime runtime, so the benchmark brings this one; MLServer's own
adaptive batching (max_batch_size, max_batch_time in model-settings.json) groups requests.
It runs inside MLServer's own virtualenv (see bench/mlserver/requirements.txt).
"""

import numpy as np
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self.settings)
        # The gateway's session defaults, so that both servers run the model alike: idle
        # onnxruntime threads sleep rather than spin.
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._output_names = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {item.name: NumpyCodec.decode_input(item) for item in payload.inputs}
        results: list[np.ndarray] = self._session.run(None, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(name, array)
                for name, array in zip(self._output_names, results, strict=True)
            ],
        )
