"""The gateway fleet as flywheel.gateway-status describes it: heartbeats, silence, departures."""

from flywheel.gateway.v1 import events_pb2 as gateway_events
from flywheel_common.events import Envelope
from flywheel_common.timestamps import epoch
from flywheel_deployer.fleet import GatewayFleet

NOW = 1_700_000_000.0


def heartbeat(gateway_id: str, at: float, ready: dict[str, int]) -> Envelope:
    status = gateway_events.GatewayStatus(
        gateway_id=gateway_id,
        ready=True,
        versions=[
            gateway_events.LoadedModelVersion(
                model=model, version=version, state=gateway_events.LOAD_STATE_READY
            )
            for model, version in ready.items()
        ],
        heartbeat_at=epoch(at),
    )
    status.heartbeat_interval.FromSeconds(1)
    return Envelope(
        id=f"{gateway_id}-{at}",
        source="flywheel-gateway",
        type=status.DESCRIPTOR.full_name,
        subject=None,
        time=None,
        content_type="application/protobuf",
        message=status,
    )


async def test_a_gateway_that_left_holds_nothing_back_and_is_not_listed() -> None:
    fleet = GatewayFleet(heartbeat_timeout_seconds=10, clock=lambda: NOW)
    await fleet.apply(b"gw-a", heartbeat("gw-a", NOW, {"m": 1}))
    await fleet.apply(b"gw-b", heartbeat("gw-b", NOW, {}))
    assert fleet.pending("m", {1}) == ["gw-b"]

    await fleet.apply(b"gw-b", None)  # gw-b stopped cleanly: its tombstone

    assert fleet.pending("m", {1}) == []
    assert [g.gateway_id for g in fleet.readiness("m")] == ["gw-a"]


async def test_a_silent_gateway_is_listed_but_no_longer_live() -> None:
    fleet = GatewayFleet(heartbeat_timeout_seconds=10, clock=lambda: NOW)
    await fleet.apply(b"gw-a", heartbeat("gw-a", NOW - 60, {}))
    [view] = fleet.readiness("m")
    assert (view.gateway_id, view.live) == ("gw-a", False)
    assert fleet.pending("m", {1}) == []
