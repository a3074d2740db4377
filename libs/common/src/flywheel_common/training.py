"""The contract between the retrain trigger and a training job.

A training job is any command. The trigger hands it a run through environment variables
(the dataset to train on, where to write, how to register the result and with which
lineage); the job registers its model version and leaves `result.json` in its output
folder naming the version. The same variables work in a subprocess and in a Kubernetes Job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flywheel.registry.v1.types_pb2 import Lineage
from flywheel_common.settings import ClientTlsSettings

RESULT_FILE = "result.json"
_PREFIX = "FLYWHEEL_TRAINING_"


@dataclass(frozen=True)
class TrainingRun:
    """What a training job is asked to do, read from or written to its environment."""

    model: str
    run_id: str
    dataset_path: str
    """CSV file: one column per feature, then `label`; header in the first line."""
    dataset_uri: str
    dataset_sha256: str
    output_dir: str
    registry_address: str
    registry_token: str = ""
    registry_ca_file: str = ""
    """CA bundle the job trusts for the registry's certificate (empty: gRPC's roots)."""
    registry_cert_file: str = ""
    """Client certificate for a registry that requires mutual TLS, with its key file."""
    registry_key_file: str = ""
    registry_server_name: str = ""
    registry_plaintext: str = ""
    """"true" when the registry serves plaintext (behind a mesh that encrypts)."""
    parent_version: int = 0
    triggered_by: str = ""
    training_entrypoint: str = ""
    """The command itself, recorded again in the new version's lineage."""
    alias: str = "candidate"
    traceparent: str = ""
    """W3C traceparent of the run's training span: the job's calls (its registration)
    continue the trace that started at the request whose window drifted."""

    @staticmethod
    def registry_tls_fields(tls: ClientTlsSettings) -> dict[str, str]:
        """The fields that hand the trigger's own registry TLS settings to a job."""
        return {
            "registry_ca_file": str(tls.ca_file or ""),
            "registry_cert_file": str(tls.cert_file or ""),
            "registry_key_file": str(tls.key_file or ""),
            "registry_server_name": tls.server_name,
            "registry_plaintext": "" if tls.enabled else "true",
        }

    def registry_tls(self) -> ClientTlsSettings:
        """How the job calls the registry: the trigger's TLS settings."""
        return ClientTlsSettings(
            enabled=self.registry_plaintext != "true",
            ca_file=Path(self.registry_ca_file) if self.registry_ca_file else None,
            cert_file=Path(self.registry_cert_file) if self.registry_cert_file else None,
            key_file=Path(self.registry_key_file) if self.registry_key_file else None,
            server_name=self.registry_server_name,
        )

    def lineage(self, code_version: str, entrypoint: str) -> Lineage:
        """The lineage the job registers its version with: the run's data, parent and
        trigger, the code (`code_version`), and the command, `entrypoint` unless the run
        names its own. The trigger accepts only a candidate whose lineage names its run."""
        return Lineage(
            dataset_uri=self.dataset_uri,
            dataset_sha256=self.dataset_sha256,
            code_version=code_version,
            parent_version=self.parent_version,
            triggered_by=self.triggered_by,
            training_entrypoint=self.training_entrypoint or entrypoint,
            retrain_run_id=self.run_id,
        )

    @property
    def idempotency_key(self) -> str:
        """A retried or restarted attempt registers the same version, never a second one."""
        return f"retrain:{self.run_id}"

    def environment(self) -> dict[str, str]:
        variables = {f"{_PREFIX}{name.upper()}": str(value) for name, value in asdict(self).items()}
        if self.traceparent:  # also as OpenTelemetry's environment carrier names it
            variables["TRACEPARENT"] = self.traceparent
        return variables

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TrainingRun | None:
        """The run this process was started for, or None outside the retrain trigger."""
        environ = os.environ if environ is None else environ
        if f"{_PREFIX}RUN_ID" not in environ:
            return None
        values: dict[str, Any] = {
            name: environ.get(f"{_PREFIX}{name.upper()}", "") for name in cls.__dataclass_fields__
        }
        values["parent_version"] = int(values["parent_version"] or 0)
        return cls(**values)


@dataclass(frozen=True)
class TrainingResult:
    """What the job leaves in its output folder: the version it registered."""

    model: str
    version: int

    def write(self, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / RESULT_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, output_dir: Path) -> TrainingResult:
        """The job's result; ValueError naming what is missing or malformed."""
        path = output_dir / RESULT_FILE
        if not path.exists():
            raise ValueError(f"the training job wrote no {RESULT_FILE} in {output_dir}")
        try:
            data = json.loads(path.read_text())
            return cls(model=str(data["model"]), version=int(data["version"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a valid training result: {error}") from error
