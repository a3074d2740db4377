"""The NVIDIA side of onnxruntime: whether the machine shows a GPU, and the CUDA libraries."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from pathlib import Path

import onnxruntime

log = logging.getLogger(__name__)


def has_nvidia_gpu() -> bool:
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


class CudaLibraries:
    """The CUDA and cuDNN libraries of the gateway's gpu extra, loaded once per process by
    onnxruntime.preload_dlls before the first CUDA session: onnxruntime looks for them on the
    loader's path, where pip-installed NVIDIA wheels are not."""

    _lock = threading.Lock()
    _missing: tuple[str, ...] | None = None

    @classmethod
    def preload(cls) -> tuple[str, ...]:
        """Load them unless done already; returns what could not be loaded."""
        with cls._lock:
            if cls._missing is None:
                cls._missing = cls._load()
            return cls._missing

    @staticmethod
    def _load() -> tuple[str, ...]:
        preload_dlls = getattr(onnxruntime, "preload_dlls", None)
        if preload_dlls is None:
            log.warning(
                "CUDA libraries not preloaded: this onnxruntime has no preload_dlls (1.21+); "
                "they must be on the loader's path",
                extra={"onnxruntime": onnxruntime.__version__},
            )
            return ()
        printed = io.StringIO()  # preload_dlls prints what it cannot load
        try:
            with contextlib.redirect_stdout(printed):
                preload_dlls()
        except Exception as exc:
            log.warning("CUDA libraries not preloaded", extra={"error": str(exc)})
            return (str(exc),)
        missing = tuple(
            line for line in printed.getvalue().splitlines() if line.startswith("Failed to load")
        )
        if missing:
            log.warning("CUDA libraries not all preloaded", extra={"missing": list(missing)})
        else:
            log.info("CUDA libraries preloaded")
        return missing
