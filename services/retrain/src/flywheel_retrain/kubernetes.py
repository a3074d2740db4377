"""Training jobs as Kubernetes Jobs: the manifest, its validation, and submission over the
Kubernetes API (the batch/v1 Jobs resource).

The dataset and the output folder live on a volume that the trigger and the Job both
mount at the same path, so the job contract (`flywheel_common.training`) is unchanged.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from flywheel_retrain.domain import ExecutorKind, command_line
from flywheel_retrain.executors import JobOutcome, JobSpec, Started
from flywheel_retrain.settings import KubernetesSettings

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONTAINER = "train"


def render_job(job: JobSpec, settings: KubernetesSettings) -> dict[str, Any]:
    """The batch/v1 Job that runs one attempt of a run's training job."""
    image = job.image or settings.image
    environment = {**job.env, **job.run.environment()}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": command_line(job.command),
        "env": [{"name": name, "value": value} for name, value in sorted(environment.items())],
        "resources": {
            "requests": {"cpu": settings.cpu, "memory": settings.memory},
            "limits": {"cpu": settings.cpu, "memory": settings.memory},
        },
    }
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    if settings.volume_claim:
        pod["volumes"] = [
            {"name": "flywheel-data", "persistentVolumeClaim": {"claimName": settings.volume_claim}}
        ]
        container["volumeMounts"] = [{"name": "flywheel-data", "mountPath": settings.mount_path}]
    labels = {
        "app.kubernetes.io/name": "flywheel-training",
        "app.kubernetes.io/managed-by": "flywheel-retrain",
        "flywheel.dev/model": job.run.model,
        "flywheel.dev/run-id": job.run.run_id,
        "flywheel.dev/attempt": str(job.attempt),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job.job_name, "namespace": settings.namespace, "labels": labels},
        "spec": {
            # Retries are the run's attempts, each its own Job, so Kubernetes never retries.
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(int(job.timeout_seconds), 1),
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def manifest_yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)


def validate_job(manifest: dict[str, Any]) -> list[str]:
    """What is wrong with a Job manifest by the API server's rules that matter here; empty
    when it is valid."""
    problems: list[str] = []
    if manifest.get("apiVersion") != "batch/v1" or manifest.get("kind") != "Job":
        problems.append("apiVersion/kind must be batch/v1 Job")
    metadata = manifest.get("metadata", {})
    name = str(metadata.get("name", ""))
    if len(name) > 63 or not _DNS_LABEL.match(name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 label of at most 63 chars")
    if not _DNS_LABEL.match(str(metadata.get("namespace", ""))):
        problems.append("metadata.namespace must be a DNS-1123 label")
    for key, value in metadata.get("labels", {}).items():
        if len(str(value)) > 63 or not _LABEL_VALUE.match(str(value)):
            problems.append(f"label {key}={value!r} is not a valid label value")
    spec = manifest.get("spec", {})
    if not isinstance(spec.get("backoffLimit"), int) or spec["backoffLimit"] < 0:
        problems.append("spec.backoffLimit must be a non-negative integer")
    deadline = spec.get("activeDeadlineSeconds")
    if not isinstance(deadline, int) or deadline <= 0:
        problems.append("spec.activeDeadlineSeconds must be a positive integer")
    pod = spec.get("template", {}).get("spec", {})
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append("a Job's pod restartPolicy must be Never or OnFailure")
    volumes = {volume.get("name") for volume in pod.get("volumes", [])}
    containers = pod.get("containers", [])
    if not containers:
        problems.append("the pod has no container")
    for container in containers:
        if not _DNS_LABEL.match(str(container.get("name", ""))):
            problems.append(f"container name {container.get('name')!r} is not a DNS-1123 label")
        if not container.get("image"):
            problems.append(f"container {container.get('name')!r} has no image")
        command = container.get("command", [])
        if not command or not all(isinstance(part, str) for part in command):
            problems.append("the container's command must be a non-empty list of strings")
        for variable in container.get("env", []):
            if not _ENV_NAME.match(str(variable.get("name", ""))):
                problems.append(f"environment variable name {variable.get('name')!r} is invalid")
            if not isinstance(variable.get("value"), str):
                problems.append(f"environment variable {variable.get('name')!r} must be a string")
        for mount in container.get("volumeMounts", []):
            if mount.get("name") not in volumes:
                problems.append(f"volume mount {mount.get('name')!r} names no volume of the pod")
    return problems


class KubernetesExecutor:
    """Submits each attempt as a Job and follows it until it ends or times out."""

    kind: ExecutorKind = ExecutorKind.KUBERNETES

    def __init__(self, settings: KubernetesSettings) -> None:
        self._settings = settings
        self._jobs: dict[str, str] = {}

    def _session(self) -> aiohttp.ClientSession:
        headers = {"Content-Type": "application/json"}
        token_file = Path(self._settings.token_file)
        if token_file.exists():
            headers["Authorization"] = f"Bearer {token_file.read_text().strip()}"
        context: ssl.SSLContext | bool = True
        if Path(self._settings.ca_file).exists():
            context = ssl.create_default_context(cafile=self._settings.ca_file)
        return aiohttp.ClientSession(
            base_url=self._settings.api_url,
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=context),
        )

    def _jobs_path(self) -> str:
        return f"/apis/batch/v1/namespaces/{self._settings.namespace}/jobs"

    async def run(self, job: JobSpec, started: Started) -> JobOutcome:
        manifest = render_job(job, self._settings)
        problems = validate_job(manifest)
        if problems:
            return JobOutcome(False, error="invalid Job manifest: " + "; ".join(problems))
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        job.log_path.write_text(manifest_yaml(manifest))
        async with self._session() as http:
            async with http.post(self._jobs_path(), json=manifest) as response:
                if response.status >= 300:
                    return JobOutcome(
                        False, error=f"the Kubernetes API refused the Job: {await response.text()}"
                    )
            self._jobs[job.run.run_id] = job.job_name
            try:
                await started(job.job_name)
                return await self._follow(http, job)
            except BaseException:
                # Cancelled or failed here: the Job must not go on to register a candidate.
                await asyncio.shield(self._delete(job.job_name))
                raise
            finally:
                self._jobs.pop(job.run.run_id, None)

    async def _follow(self, http: aiohttp.ClientSession, job: JobSpec) -> JobOutcome:
        while True:
            async with http.get(f"{self._jobs_path()}/{job.job_name}") as response:
                if response.status == 404:
                    return JobOutcome(False, error=f"Job {job.job_name} was deleted")
                if response.status >= 300:
                    status: dict[str, Any] = {}  # the API server is busy; ask again
                else:
                    status = (await response.json()).get("status", {})
            for condition in status.get("conditions", []):
                if condition.get("status") != "True":
                    continue
                if condition.get("type") == "Complete":
                    return JobOutcome(True)
                if condition.get("type") == "Failed":
                    timed_out = condition.get("reason") == "DeadlineExceeded"
                    return JobOutcome(False, timed_out, condition.get("message", "Job failed"))
            await asyncio.sleep(self._settings.poll_seconds)

    async def cancel(self, run_id: str) -> None:
        name = self._jobs.get(run_id)
        if name is not None:
            await self._delete(name)

    async def _delete(self, name: str) -> None:
        async with self._session() as http:
            await http.delete(
                f"{self._jobs_path()}/{name}", json={"propagationPolicy": "Background"}
            )
