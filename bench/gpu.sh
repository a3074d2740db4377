#!/usr/bin/env bash
# The gateway on an NVIDIA GPU in one go, within about 5 minutes:
#   1. `nvidia-smi -L`: without an NVIDIA GPU it says so and exits 0 (nothing to measure);
#   2. installs the workspace with the gateway's gpu extra (CUDA 13 and cuDNN 9 from PyPI);
#   3. checks that onnxruntime lists CUDAExecutionProvider and that a model session, created
#      as the gateway creates them (its onnxruntime.preload_dlls first), really runs on CUDA;
#   4. runs the gateway benchmark (bench/gateway.py) with EXECUTION_PROVIDER=cuda, Kafka
#      started if needed: each gateway must report CUDAExecutionProvider in its REST model
#      metadata, or the benchmark stops.
# Afterwards `make install` syncs the environment back without the extra.
#   bench/gpu.sh
#   GPU_BENCH_SECONDS=5 GPU_BENCH_CONCURRENCY="1 4 16 64" bench/gpu.sh   # longer cells
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "no NVIDIA GPU on this machine: nothing to measure (nvidia-smi is not installed)"
    exit 0
fi
if ! gpus=$(nvidia-smi -L 2>&1) || [[ $gpus != *GPU* ]]; then
    echo "no NVIDIA GPU on this machine: nothing to measure (nvidia-smi -L: ${gpus:-nothing})"
    exit 0
fi
echo "$gpus"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# uv as the Makefile finds it: on PATH, else the copy in the Python that runs this.
if command -v uv >/dev/null 2>&1; then
    uv=(uv)
else
    python3 -m uv --version >/dev/null 2>&1 ||
        python3 -m pip install --quiet --disable-pip-version-check uv
    uv=(python3 -m uv)
fi

echo "== installing the gateway's gpu extra"
"${uv[@]}" sync --frozen --extra gpu --quiet

echo "== onnxruntime on CUDA"
"${uv[@]}" run --frozen --extra gpu python - <<'EOF'
import sys

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

from flywheel_gateway.cuda import CudaLibraries
from flywheel_gateway.providers import CPU, CUDA

built_for = getattr(onnxruntime, "cuda_version", "") or "?"
print(f"onnxruntime {onnxruntime.__version__}, built for CUDA {built_for}")
available = onnxruntime.get_available_providers()
print("available providers:", ", ".join(available))
if CUDA not in available:
    sys.exit(f"this onnxruntime lists no {CUDA}")
missing = CudaLibraries.preload()
print("libraries not preloaded:", "; ".join(missing) if missing else "none")

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])
weights = helper.make_tensor(
    "w", TensorProto.FLOAT, [64, 64], np.eye(64, dtype=np.float32).ravel().tolist()
)
matmul = helper.make_node("MatMul", ["x", "w"], ["y"])
graph = helper.make_graph([matmul], "identity", [x], [y], [weights])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
session = onnxruntime.InferenceSession(model.SerializeToString(), providers=[CUDA, CPU])
print("a session asked for CUDA runs on:", ", ".join(session.get_providers()))
if session.get_providers()[0] != CUDA:
    sys.exit("onnxruntime fell back from CUDA: its log above says why")
rows = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
[out] = session.run(None, {"x": rows})
np.testing.assert_allclose(out, rows, rtol=1e-5)
print("a MatMul on CUDA returned its input times the identity: CUDA works")
EOF

echo "== gateway benchmark, EXECUTION_PROVIDER=cuda"
# bench/gateway.py without MLServer: a bare gRPC server and six gateways, each measured at
# the given concurrencies for GPU_BENCH_SECONDS (plus 1 s of warm-up): about 3 minutes.
# `timeout` bounds it should a gateway hang.
read -r -a concurrency <<<"${GPU_BENCH_CONCURRENCY:-1 16 64}"
infra/with-backends.sh --no-swift timeout --kill-after=10 300 \
    "${uv[@]}" run --frozen --extra gpu python bench/gateway.py \
    --execution-provider cuda --gateway-only --bootstrap "127.0.0.1:${KAFKA_PORT:-19092}" \
    --seconds "${GPU_BENCH_SECONDS:-3}" --concurrency "${concurrency[@]}"
