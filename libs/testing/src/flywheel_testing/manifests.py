"""infra/k8s's overlays rendered with the project's pinned kustomize, and the environment
variable names a service's settings class reads."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[4]
K8S = ROOT / "infra/k8s"
WORKLOADS = ("Deployment", "StatefulSet")

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """Every object one overlay renders to."""

    overlay: str
    objects: list[Manifest]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> Manifest:
        [found] = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found

    def workloads(self) -> Iterator[Manifest]:
        for kind in WORKLOADS:
            yield from self.of_kind(kind)

    def containers(self) -> Iterator[tuple[Manifest, Manifest]]:
        """Each workload with each of its containers."""
        for workload in self.workloads():
            for container in workload["spec"]["template"]["spec"]["containers"]:
                yield workload, container


def render(overlay: str, workdir: Path) -> Rendered:
    """`kustomize build` of a copy of infra/k8s in `workdir`, with prod's secret files made
    afresh by make-secrets.sh (a developer's own are neither read nor touched)."""
    tree = workdir / "k8s"
    shutil.copytree(K8S, tree)
    secrets = tree / "overlays/prod/secrets"
    for made in secrets.glob("*.env"):
        made.unlink()
    _run(tree / "make-secrets.sh", secrets)
    built = _run(K8S / "kustomize.sh", "build", tree / "overlays" / overlay)
    return Rendered(overlay, [o for o in yaml.safe_load_all(built) if o])


def _run(*command: str | Path) -> str:
    """The command's output; its own words on stderr when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=280, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stderr}")
    return done.stdout


def settings_env_names(settings: type[BaseSettings]) -> set[str]:
    """Every variable the settings class reads: PREFIX_FIELD, and PREFIX_SECTION__FIELD for
    the fields of its sections (and of sections within them)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    delimiter = str(settings.model_config.get("env_nested_delimiter", "__"))
    return _names(settings, prefix.upper(), delimiter)


def _names(model: type[BaseModel], prefix: str, delimiter: str) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        top = f"{prefix}{name.upper()}"
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names |= _names(section, f"{top}{delimiter}", delimiter)
        else:
            names.add(top)
    return names
