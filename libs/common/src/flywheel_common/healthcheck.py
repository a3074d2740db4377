"""Waits until gRPC servers report SERVING: `python -m flywheel_common.healthcheck HOST:PORT...`.

Used by `make run`, container probes and tests; exits 1 naming the servers that are not up.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def is_serving(address: str, timeout: float = 2.0) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def wait_until_serving(addresses: list[str], timeout: float) -> list[str]:
    """Poll until every address is SERVING; returns the ones still down at the deadline."""
    deadline = time.monotonic() + timeout
    pending = list(addresses)
    while pending and time.monotonic() < deadline:
        results = await asyncio.gather(*(is_serving(address) for address in pending))
        pending = [address for address, up in zip(pending, results, strict=True) if not up]
        if pending:
            await asyncio.sleep(0.25)
    return pending


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("addresses", nargs="+", metavar="HOST:PORT")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    args = parser.parse_args()
    down = asyncio.run(wait_until_serving(args.addresses, args.timeout))
    if down:
        print(f"not serving after {args.timeout:.0f}s: {', '.join(down)}", file=sys.stderr)
        sys.exit(1)
    print(f"serving: {', '.join(args.addresses)}")


if __name__ == "__main__":
    main()
