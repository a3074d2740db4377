"""How a client calls several replicas of a service: the retry policy README recommends,
round robin over every replica's address."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

README = Path(__file__).resolve().parents[4] / "README.md"
MARKER = "<!-- retry-policy -->"


def retry_service_config() -> str:
    """The gRPC service config README recommends to clients, read from README itself."""
    text = README.read_text()
    start = text.index(MARKER)
    block = text[text.index("```json", start) + len("```json") : text.index("```\n", start + 30)]
    json.loads(block)  # README shows valid JSON
    return block


def retrying_options() -> list[tuple[str, str | int]]:
    """Channel options of a client that follows README's retry policy."""
    return [("grpc.service_config", retry_service_config()), ("grpc.enable_retries", 1)]


def replicas_target(addresses: Sequence[str]) -> str:
    """One gRPC target naming every replica (`ipv4:host:port,host:port`), as a DNS name
    that resolves to each of them would."""
    return "ipv4:" + ",".join(addresses)
