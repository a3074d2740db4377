"""Waits until gRPC servers report SERVING: `python -m flywheel_common.healthcheck HOST:PORT...`.

Used by `make run`, container probes and tests; exits 1 naming the servers that are not up.
TLS comes from FLYWHEEL_HEALTHCHECK_TLS__CA_FILE (and __CERT_FILE, __KEY_FILE for mutual
TLS, __ENABLED=false for a plaintext server) or the flags of the same names.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel_common.channels import aio_channel
from flywheel_common.settings import ClientTlsSettings


class ProbeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_HEALTHCHECK_", env_nested_delimiter="__")

    tls: ClientTlsSettings = ClientTlsSettings()


async def is_serving(
    address: str, tls: ClientTlsSettings, timeout: float = 2.0, service: str = ""
) -> bool:
    """Whether the server (or one of its services, by full name) answers SERVING."""
    async with aio_channel(address, tls) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def wait_until_serving(
    addresses: list[str], tls: ClientTlsSettings, timeout: float, service: str = ""
) -> list[str]:
    """Poll until every address is SERVING; returns the ones still down at the deadline."""
    deadline = time.monotonic() + timeout
    pending = list(addresses)
    while pending and time.monotonic() < deadline:
        results = await asyncio.gather(
            *(is_serving(address, tls, service=service) for address in pending)
        )
        pending = [address for address, up in zip(pending, results, strict=True) if not up]
        if pending:
            await asyncio.sleep(0.25)
    return pending


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("addresses", nargs="+", metavar="HOST:PORT")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    parser.add_argument("--ca-file", type=Path, help="CA bundle trusted for the servers")
    parser.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--key-file", type=Path, help="key of the client certificate")
    parser.add_argument("--server-name", help="name the server certificates carry")
    parser.add_argument("--plaintext", action="store_true", help="servers without TLS")
    parser.add_argument("--service", default="", help="one service's health, by full name")
    args = parser.parse_args()
    overrides = {
        name: value
        for name, value in (
            ("ca_file", args.ca_file),
            ("cert_file", args.cert_file),
            ("key_file", args.key_file),
            ("server_name", args.server_name),
        )
        if value is not None
    }
    if args.plaintext:
        overrides["enabled"] = False
    tls = ClientTlsSettings.model_validate(
        {**ProbeSettings().tls.model_dump(exclude_unset=True), **overrides}
    )
    down = asyncio.run(wait_until_serving(args.addresses, tls, args.timeout, args.service))
    if down:
        print(f"not serving after {args.timeout:.0f}s: {', '.join(down)}", file=sys.stderr)
        sys.exit(1)
    print(f"serving: {', '.join(args.addresses)}")


if __name__ == "__main__":
    main()
