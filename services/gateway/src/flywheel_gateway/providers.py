"""Which onnxruntime execution providers a version asks for, and which one it really runs on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def wants_cuda(preference: str, has_gpu: bool) -> bool:
    """EXECUTION_PROVIDER=cuda, or auto on a machine that shows an NVIDIA GPU."""
    return preference == "cuda" or (preference == "auto" and has_gpu)


def requested_providers(cuda_wanted: bool, available: Sequence[str]) -> list[str]:
    """CUDA first (the CPU runs what CUDA cannot) when wanted and this onnxruntime has it."""
    if cuda_wanted and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


@dataclass(frozen=True)
class Placement:
    provider: str
    """The provider the session runs on: the first one the session itself reports."""
    fell_back: bool
    """CUDA was wanted and the session runs on something else."""


def placement(cuda_wanted: bool, reported: Sequence[str]) -> Placement:
    """Where a session runs, from what the session reports, never from what it was asked:
    onnxruntime leaves out a provider it could not create (libraries missing, no device)
    and runs on the next, so a session asked for CUDA may report only the CPU."""
    provider = reported[0] if reported else CPU
    return Placement(provider, cuda_wanted and provider != CUDA)


def fallback_reason(available: Sequence[str], has_gpu: bool, missing: Sequence[str]) -> str:
    """Why a session that wanted CUDA runs on the CPU, as far as the gateway can tell;
    `missing` is what onnxruntime.preload_dlls could not load."""
    if CUDA not in available:
        return "this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)"
    if not has_gpu:
        return "this machine shows no NVIDIA GPU (no /dev/nvidia0 or /dev/nvidiactl)"
    if missing:
        return "the CUDA libraries were not found (install the gateway's gpu extra): " + "; ".join(
            missing
        )
    return (
        "onnxruntime could not create the CUDA execution provider (the driver too old for "
        "this CUDA, or the device unusable: onnxruntime's own log says which)"
    )
