"""What a registration must satisfy: names and free text, digests, signatures and their
compatibility with production, and the layout of a reference sample."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_common.names import check_name
from flywheel_common.signatures import DATATYPE_SIZES, DYNAMIC, Signature

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
PRODUCTION = "production"

REFERENCE_SAMPLE_DATATYPES = ("FP32", "FP64")
MAX_MAP_ENTRIES = 1000


MAX_TEXT = 16 * 1024


def check_text(kind: str, value: str, limit: int = MAX_TEXT) -> str:
    """Free text stored as given, within a size limit and without NUL characters
    (which PostgreSQL's text type cannot hold)."""
    if len(value) > limit:
        raise InvalidArgument(f"{kind} is limited to {limit} characters, not {len(value)}")
    if "\x00" in value:
        raise InvalidArgument(f"{kind} must not contain NUL characters")
    return value


def check_key(kind: str, key: str) -> str:
    if not key:
        raise InvalidArgument(f"{kind} keys must not be empty")
    return check_text(f"{kind} key {key[:40]!r}", key, 256)


def check_version(version: int) -> int:
    if version < 1:
        raise InvalidArgument(f"version must be 1 or more, not {version}")
    return version


def check_sha256(kind: str, value: str) -> str:
    if value and not SHA256_PATTERN.fullmatch(value):
        raise InvalidArgument(f"{kind} must be 64 lowercase hex characters, not {value!r}")
    return value


def _shapes_compatible(old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    if len(old) != len(new):
        return False
    return all(a == b or DYNAMIC in (a, b) for a, b in zip(old, new, strict=True))


def signature_incompatibilities(current: Signature, candidate: Signature) -> list[str]:
    """Why a caller of `current` would break on `candidate`; empty when it would not.

    A caller sends the current inputs and reads the current outputs, so the candidate must
    accept exactly those inputs (no new required ones) and still produce those outputs.
    """
    problems: list[str] = []
    candidate_inputs = {t.name: t for t in candidate.inputs}
    current_input_names = {t.name for t in current.inputs}
    for old in current.inputs:
        new = candidate_inputs.get(old.name)
        if new is None:
            problems.append(f"input {old.name!r} is gone")
        elif new.datatype != old.datatype:
            problems.append(f"input {old.name!r} changed type {old.datatype} -> {new.datatype}")
        elif not _shapes_compatible(old.shape, new.shape):
            problems.append(f"input changed shape {old.describe()} -> {new.describe()}")
    for extra in candidate.inputs:
        if extra.name not in current_input_names:
            problems.append(f"new input {extra.name!r} that current callers do not send")
    candidate_outputs = {t.name: t for t in candidate.outputs}
    for old in current.outputs:
        new = candidate_outputs.get(old.name)
        if new is None:
            problems.append(f"output {old.name!r} is gone")
        elif new.datatype != old.datatype:
            problems.append(f"output {old.name!r} changed type {old.datatype} -> {new.datatype}")
        elif not _shapes_compatible(old.shape, new.shape):
            problems.append(f"output changed shape {old.describe()} -> {new.describe()}")
    return problems


def check_compatible_with_production(
    production: Signature | None, candidate: Signature, production_version: int, breaking: bool
) -> None:
    if production is None or breaking:
        return
    problems = signature_incompatibilities(production, candidate)
    if problems:
        raise FailedPrecondition(
            f"signature is incompatible with production version {production_version}: "
            + "; ".join(problems)
            + ". Fix the model, or register it with breaking_change=true"
        )


@dataclass(frozen=True)
class ReferenceSampleLayout:
    """A float matrix of training inputs, rows by features, sent after the artifact."""

    datatype: str
    shape: tuple[int, ...]
    feature_names: tuple[str, ...]
    input_name: str

    @property
    def size_bytes(self) -> int:
        size = DATATYPE_SIZES[self.datatype] or 0
        for dim in self.shape:
            size *= dim
        return size

    def check(self, signature: Signature) -> None:
        """The sample must be a 2-D float matrix that fits the model input it describes."""
        if self.datatype not in REFERENCE_SAMPLE_DATATYPES:
            raise InvalidArgument(
                f"reference sample datatype must be FP32 or FP64, not {self.datatype!r}"
            )
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise InvalidArgument(
                f"reference sample shape must be [rows, features] with both >= 1, "
                f"not {list(self.shape)}"
            )
        if self.feature_names and len(self.feature_names) != self.shape[1]:
            raise InvalidArgument(
                f"reference sample has {self.shape[1]} features but "
                f"{len(self.feature_names)} feature names"
            )
        inputs = {t.name: t for t in signature.inputs}
        if self.input_name and self.input_name not in inputs:
            raise InvalidArgument(
                f"reference sample input_name {self.input_name!r} is not a model input "
                f"(inputs: {', '.join(inputs)})"
            )
        target = inputs.get(self.input_name) if self.input_name else None
        if target is None and len(signature.inputs) == 1:
            target = signature.inputs[0]
        if (
            target is not None
            and len(target.shape) == 2
            and target.shape[1] not in (DYNAMIC, self.shape[1])
        ):
            raise InvalidArgument(
                f"reference sample has {self.shape[1]} features but input "
                f"{target.describe()} takes {target.shape[1]}"
            )

    def check_received(self, received_bytes: int) -> None:
        if received_bytes != self.size_bytes:
            raise InvalidArgument(
                f"reference sample announced {self.datatype}{list(self.shape)} = "
                f"{self.size_bytes} bytes but {received_bytes} bytes arrived"
            )


@dataclass(frozen=True)
class ValidatedModel:
    """What validating an ONNX artifact found out about it."""

    signature: Signature
    ir_version: int
    opset_version: int
    producer_name: str


@dataclass(frozen=True)
class NewVersion:
    """What a registration says about the version, before its bytes arrive."""

    model: str
    description: str = ""
    model_description: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    breaking_change: bool = False
    reference_sample: ReferenceSampleLayout | None = None
    aliases: tuple[str, ...] = ()

    def check(self) -> None:
        check_name("model", self.model)
        for alias in self.aliases:
            check_name("alias", alias)
        if len(set(self.aliases)) != len(self.aliases):
            raise InvalidArgument("aliases must not repeat")
        for name, number in self.metrics.items():
            check_key("metrics", name)
            if not math.isfinite(number):
                raise InvalidArgument(f"metric {name!r} must be a finite number, not {number}")
        for what, texts in (("params", self.params), ("tags", self.tags)):
            for key, text in texts.items():
                check_key(what, key)
                check_text(f"{what}[{key[:40]!r}]", text)
        for what, size in (
            ("params", len(self.params)),
            ("metrics", len(self.metrics)),
            ("tags", len(self.tags)),
        ):
            if size > MAX_MAP_ENTRIES:
                raise InvalidArgument(f"at most {MAX_MAP_ENTRIES} {what} per version")
        check_text("description", self.description)
        check_text("model_description", self.model_description)
        check_text("idempotency_key", self.idempotency_key, 256)
        for name, value in self.lineage.items():
            if isinstance(value, str):
                check_text(f"lineage.{name}", value, 2048)
        if self.reference_sample is not None:
            for name in (*self.reference_sample.feature_names, self.reference_sample.input_name):
                check_text("reference sample feature or input name", name, 256)
        check_sha256("lineage.dataset_sha256", str(self.lineage.get("dataset_sha256", "")))
        if int(self.lineage.get("parent_version", 0)) < 0:
            raise InvalidArgument("lineage.parent_version must not be negative")
