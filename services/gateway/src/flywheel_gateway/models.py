"""Model versions in memory: fetched from the registry, verified, loaded, warmed, drained."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import onnxruntime
from opentelemetry import metrics

from flywheel_common.artifact_cache import ArtifactFetcher
from flywheel_common.errors import (
    FailedPrecondition,
    FlywheelError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from flywheel_common.heap import settle_heap
from flywheel_common.signatures import (
    DYNAMIC,
    NUMPY_DTYPES,
    Signature,
    session_signature,
)
from flywheel_gateway.batching import Arrays, BatchPolicy, DynamicBatcher
from flywheel_gateway.cuda import CudaLibraries, has_nvidia_gpu
from flywheel_gateway.providers import (
    CUDA,
    fallback_reason,
    placement,
    requested_providers,
    wants_cuda,
)

log = logging.getLogger(__name__)


class LoadState(StrEnum):
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(frozen=True)
class RuntimeOptions:
    provider: str = "auto"
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    thread_spinning: bool = False
    batch: BatchPolicy = field(default_factory=BatchPolicy)


def session_options(runtime: RuntimeOptions) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = runtime.intra_op_threads
    options.inter_op_num_threads = runtime.inter_op_threads
    spinning = "1" if runtime.thread_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    options.log_severity_level = 3
    return options


@dataclass
class LoadedVersion:
    model: str
    version: int
    sha256: str
    state: LoadState
    signature: Signature = field(default_factory=lambda: Signature((), ()))
    provider: str = ""
    error: str = ""
    retryable: bool = True
    """Whether clients may retry a failed load's requests: the registry was unreachable, or
    the deployer routes away from a version that cannot load (it sees the failure in this
    gateway's status); not when the registry refused this gateway's token, which someone
    must fix and no rollback mends."""
    session: onnxruntime.InferenceSession | None = None
    batcher: DynamicBatcher | None = None
    counted: bool = False
    """Whether flywheel.gateway.model.loaded counts this version."""
    in_flight: int = 0
    state_since: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def draining(self) -> bool:
        return self.state is LoadState.DRAINING

    def set_state(self, state: LoadState, error: str = "", retryable: bool = True) -> None:
        self.state, self.error, self.state_since = state, error, datetime.now(UTC)
        self.retryable = retryable

    def run(self, inputs: Arrays) -> Arrays:
        assert self.session is not None
        names = [spec.name for spec in self.signature.outputs]
        results = self.session.run(names, inputs)
        return dict(zip(names, results, strict=True))


def _metric_attributes(loaded: LoadedVersion) -> dict[str, str]:
    return {
        "model": loaded.model,
        "version": str(loaded.version),
        "execution_provider": loaded.provider,
    }


def _warmup_inputs(signature: Signature) -> Arrays:
    arrays = {}
    for spec in signature.inputs:
        shape = tuple(1 if dim == DYNAMIC else dim for dim in spec.shape)
        dtype = NUMPY_DTYPES.get(spec.datatype, np.dtype(np.float32))
        arrays[spec.name] = np.zeros(shape, dtype=dtype)
    return arrays


class ModelManager:
    """The versions this gateway holds, with their load state and in-flight requests."""

    def __init__(
        self,
        fetcher: ArtifactFetcher,
        options: RuntimeOptions,
        on_change: Callable[[], None] = lambda: None,
        meter: metrics.Meter | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._options = options
        self.on_change = on_change
        self._versions: dict[tuple[str, int], LoadedVersion] = {}
        self._loading: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._ready: dict[str, frozenset[int]] = {}
        self._executor = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="infer")
        self._available = onnxruntime.get_available_providers()
        self._has_gpu = has_nvidia_gpu()
        self._cuda_wanted = wants_cuda(options.provider, self._has_gpu)
        self._providers = requested_providers(self._cuda_wanted, self._available)
        self._loaded_metric = (meter or metrics.get_meter(__name__)).create_up_down_counter(
            "flywheel.gateway.model.loaded",
            description="1 per ready (or draining) version, by model, version and the "
            "execution provider it runs on",
        )

    @property
    def versions(self) -> list[LoadedVersion]:
        return list(self._versions.values())

    def is_ready(self, model: str, version: int) -> bool:
        loaded = self._versions.get((model, version))
        return loaded is not None and loaded.state is LoadState.READY

    def ready_versions(self, model: str) -> list[int]:
        return sorted(self.ready_set(model))

    def ready_set(self, model: str) -> frozenset[int]:
        """The model's routable versions; kept current on every change, read per request."""
        return self._ready.get(model, frozenset())

    def not_ready(self, model: str, versions: Iterable[int]) -> FlywheelError:
        """Why none of `versions` can take a request: FAILED_PRECONDITION when every one
        failed to load for a reason neither retrying nor a rollback mends (so clients stop
        retrying and someone fixes it), UNAVAILABLE while one may still become ready."""
        failures = [self._versions.get((model, version)) for version in versions]
        if failures and all(
            loaded is not None and loaded.state is LoadState.FAILED and not loaded.retryable
            for loaded in failures
        ):
            reasons = "; ".join(f"version {f.version}: {f.error}" for f in failures if f)
            return FailedPrecondition(f"model {model!r} cannot be served: {reasons}")
        return Unavailable(f"model {model!r} has no routed version ready yet; retry shortly")

    def _changed(self) -> None:
        ready: dict[str, set[int]] = {}
        for (model, version), loaded in self._versions.items():
            if loaded.state is LoadState.READY:
                ready.setdefault(model, set()).add(version)
        self._ready = {model: frozenset(versions) for model, versions in ready.items()}
        self.on_change()

    def load(self, model: str, version: int) -> asyncio.Task[None] | None:
        """Start loading a version unless it is loaded or loading; returns the load task."""
        key = (model, version)
        existing = self._versions.get(key)
        if existing is not None and existing.state is LoadState.DRAINING:
            existing.set_state(LoadState.READY)  # wanted again before it drained: keep it
            self._changed()
        if key in self._loading:
            return self._loading[key]
        if existing is not None and existing.state is not LoadState.FAILED:
            return None
        task = asyncio.create_task(self._load(model, version), name=f"load:{model}:{version}")
        self._loading[key] = task
        task.add_done_callback(lambda _: self._loading.pop(key, None))
        return task

    async def _load(self, model: str, version: int) -> None:
        loaded = LoadedVersion(model, version, "", LoadState.DOWNLOADING)
        self._versions[(model, version)] = loaded
        self._changed()
        try:
            loaded.sha256, path = await self._fetcher.fetch(model, version)
            loaded.set_state(LoadState.LOADING)
            self._changed()
            loop = asyncio.get_running_loop()
            session = await loop.run_in_executor(self._executor, self._create_session, path)
            loaded.session = session
            loaded.provider = self._placed(model, version, session.get_providers())
            loaded.signature = session_signature(session)
            await loop.run_in_executor(self._executor, loaded.run, _warmup_inputs(loaded.signature))
            loaded.batcher = DynamicBatcher(
                loaded.run,
                self._executor,
                self._options.batch,
                {"model": model, "version": str(version)},
            )
        except FlywheelError as exc:  # the registry said no: a known cause, no traceback
            log.warning(
                "loading failed", extra={"model": model, "version": version, "error": exc.message}
            )
            loaded.set_state(LoadState.FAILED, exc.message, not isinstance(exc, FailedPrecondition))
            self._changed()
            return
        except Exception as exc:
            log.exception("loading failed", extra={"model": model, "version": version})
            loaded.set_state(LoadState.FAILED, str(exc))
            self._changed()
            return
        # Only now, warmed up, does the version become routable.
        loaded.set_state(LoadState.READY)
        loaded.counted = True
        self._loaded_metric.add(1, _metric_attributes(loaded))
        log.info(
            "model ready",
            extra={"model": model, "version": version, "execution_provider": loaded.provider},
        )
        self._changed()
        settle_heap()  # the session and its batcher live as long as the version

    def _placed(self, model: str, version: int, reported: list[str]) -> str:
        """The provider the session runs on; a warning when it is not the CUDA wanted."""
        where = placement(self._cuda_wanted, reported)
        if where.fell_back:
            missing = CudaLibraries.preload() if CUDA in self._providers else ()
            log.warning(
                "CUDA wanted but not used: the version runs on another provider",
                extra={
                    "model": model,
                    "version": version,
                    "execution_provider": where.provider,
                    "reason": fallback_reason(self._available, self._has_gpu, missing),
                },
            )
        return where.provider

    def _create_session(self, path: Path) -> onnxruntime.InferenceSession:
        if CUDA in self._providers:
            CudaLibraries.preload()
        return onnxruntime.InferenceSession(
            str(path), sess_options=session_options(self._options), providers=self._providers
        )

    def retire(self, model: str, version: int) -> None:
        """Stop routing to a version; it unloads once its in-flight requests finish."""
        loaded = self._versions.get((model, version))
        if loaded is None:
            return
        if loaded.state is LoadState.FAILED or (
            loaded.in_flight == 0 and loaded.state is not LoadState.DOWNLOADING
        ):
            self._unload(loaded)
        else:
            loaded.set_state(LoadState.DRAINING)
        self._changed()

    def _unload(self, loaded: LoadedVersion) -> None:
        self._versions.pop((loaded.model, loaded.version), None)
        if loaded.counted:
            loaded.counted = False
            self._loaded_metric.add(-1, _metric_attributes(loaded))
        if loaded.batcher is not None:
            loaded.batcher.close()
        loaded.session = None
        log.info("model unloaded", extra={"model": loaded.model, "version": loaded.version})

    @asynccontextmanager
    async def use(self, model: str, version: int) -> AsyncIterator[LoadedVersion]:
        """Hold a ready version for one request; a draining version unloads after the last."""
        loaded = self._versions.get((model, version))
        if loaded is None:
            raise NotFound(f"model {model!r} version {version} is not served by this gateway")
        if loaded.state is not LoadState.READY:
            raise Unavailable(f"model {model!r} version {version} is {loaded.state}; retry shortly")
        loaded.in_flight += 1
        try:
            yield loaded
        finally:
            loaded.in_flight -= 1
            if loaded.in_flight == 0 and loaded.draining:
                self._unload(loaded)
                self._changed()

    async def infer(self, loaded: LoadedVersion, inputs: Arrays) -> Arrays:
        assert loaded.batcher is not None
        try:
            return await loaded.batcher.infer(inputs)
        except Exception as exc:  # onnxruntime rejects what the signature check let through
            raise InvalidArgument(f"the model could not run this input: {exc}") from exc

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        for loaded in list(self._versions.values()):
            self._unload(loaded)
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self._fetcher.close()
