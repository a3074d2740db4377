"""The registry's rules: names, signatures and their compatibility, reference samples, paging."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_common.signatures import DATATYPE_SIZES, DYNAMIC, Signature

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
PRODUCTION = "production"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

REFERENCE_SAMPLE_DATATYPES = ("FP32", "FP64")


def check_name(kind: str, value: str) -> str:
    """Model and alias names: lowercase, digits, '.', '_', '-'; 1 to 128 characters."""
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{kind} {value!r} is not a valid name: use 1 to 128 characters of a-z, 0-9, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return value


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


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(f"page_size must be 0 (default) or positive, not {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def query_fingerprint(query: Any) -> str:
    """A short digest of a query, so a page token is only accepted by the query that made it."""
    canonical = json.dumps(query, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(position: Any, fingerprint: str) -> str:
    payload = json.dumps({"p": position, "q": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str, kind: type[Any] = int) -> Any:
    """The position a token points at (of type `kind`); None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position, token_fingerprint = data["p"], data["q"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument("page_token is not a token this server issued") from None
    if token_fingerprint != fingerprint:
        raise InvalidArgument(
            "page_token belongs to a different query; repeat the query that returned it"
        )
    if not isinstance(position, kind) or isinstance(position, bool):
        raise InvalidArgument("page_token is not a token this server issued")
    return position
