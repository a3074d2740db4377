"""Kafka stopped under load and restarted, or a gateway killed right after it answered or
in the middle of a load: every prediction log of an answered request arrives exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import grpc
import pytest

from flywheel_common.settings import KafkaSettings
from flywheel_testing.backends import unused_port
from flywheel_testing.models import IrisModels
from flywheel_testing.processes import ServiceReplica
from flywheel_testing.tls import grpc_settings, secure_channel
from inference import grpc_service_pb2_grpc as pb_grpc

from .conftest import Platform, drive
from .test_gateway_state import typed_request
from .test_serving import prediction_logs

KAFKA_SCRIPTS = Path(__file__).resolve().parents[4] / "infra" / "kafka"


async def run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()


@pytest.fixture
async def restartable_kafka() -> None:
    status = await asyncio.create_subprocess_exec(
        str(KAFKA_SCRIPTS / "node.sh"),
        "status",
        "1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    if await status.wait() != 0:
        pytest.fail("this test stops and restarts the broker: start it with `make kafka-up`")


@pytest.mark.parametrize(
    "own_platform",
    [
        {
            "kafka": KafkaSettings(
                # The broker infra/kafka's scripts stop and start: theirs, on KAFKA_PORT.
                bootstrap_servers=f"127.0.0.1:{os.environ.get('KAFKA_PORT', '19092')}",
                linger_ms=1,
                request_timeout_ms=5000,
            )
        }
    ],
    indirect=True,
)
async def test_prediction_logs_survive_kafka_going_away(
    restartable_kafka: None,
    own_platform: Platform,
    iris: IrisModels,
    model_name: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    await own_platform.register(model_name, iris.classifier)
    await own_platform.deploy(model_name, {1: 100}, generation=1)
    back = tmp_path / "kafka-back"
    load = asyncio.create_task(
        drive(
            own_platform.address,
            "load",
            model=model_name,
            seconds=60.0,
            stop_file=str(back),
            concurrency=4,
        )
    )
    await asyncio.sleep(3.0)
    await run(str(KAFKA_SCRIPTS / "stop.sh"))
    await asyncio.sleep(8.0)  # requests keep being served; their logs go to the spool
    await run(str(KAFKA_SCRIPTS / "start.sh"))
    await asyncio.sleep(2.0)  # served with the broker back, then the load ends
    back.touch()
    result = await load
    assert result["failure_count"] == 0, result["failures"]
    served = sum(result["versions"].values())
    assert served > 200

    logs = await prediction_logs(kafka_bootstrap, model_name, at_least=served)
    per_request = Counter(log.request_id for log in logs)
    assert len(per_request) == served
    assert max(per_request.values()) == 1


def gateway_of_its_own(platform: Platform, name: str, linger_ms: int) -> ServiceReplica:
    """A gateway process with a port, an id and a data folder of its own, whose producer
    holds prediction logs `linger_ms` before it sends them."""
    settings = platform.settings.model_copy(
        update={
            "grpc": grpc_settings(port=unused_port()),
            "gateway_id": f"{platform.settings.gateway_id}-{name}",
            "data_dir": platform.settings.data_dir / name,
            "prediction_linger_ms": linger_ms,
        }
    )
    return ServiceReplica("flywheel_gateway", settings)


async def test_a_gateway_killed_right_after_answering_loses_no_log(
    platform: Platform, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=1)
    # The producer holds logs for seconds before it sends them: only what was spooled
    # before each answer survives the kill.
    replica = gateway_of_its_own(platform, "killed", linger_ms=5000)
    await replica.start()
    ids = [f"{model_name}-{index}" for index in range(20)]
    try:
        async with secure_channel(replica.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for request_id in ids:
                request = typed_request(model_name, iris.features[:1])
                request.id = request_id
                await stub.ModelInfer(request, timeout=10)
        await replica.kill()
        await replica.start()  # sends what the spool holds
        logs = await prediction_logs(kafka_bootstrap, model_name, at_least=len(ids))
    finally:
        await replica.stop()
    assert Counter(log.request_id for log in logs) == Counter(ids)


async def test_a_gateway_killed_under_load_loses_no_log_of_an_answered_request(
    platform: Platform, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=1)
    # Many logs sent, none acknowledged yet, at the kill:
    replica = gateway_of_its_own(platform, "loaded", linger_ms=500)
    await replica.start()
    answered: list[str] = []
    refused: list[grpc.StatusCode] = []
    enough = asyncio.Event()

    async def client(stub: pb_grpc.GRPCInferenceServiceStub, number: int) -> None:
        """Requests one after another until the gateway dies; notes each one answered OK."""
        for index in range(100_000):
            request = typed_request(model_name, iris.features[:2])
            request.id = f"{model_name}-{number}-{index}"
            try:
                await stub.ModelInfer(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                refused.append(error.code())
                return
            answered.append(request.id)
            if len(answered) >= 2000:
                enough.set()

    try:
        async with secure_channel(replica.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            clients = [asyncio.create_task(client(stub, number)) for number in range(8)]
            await enough.wait()
            await replica.kill()  # 8 requests in flight, hundreds of logs not yet in Kafka
            await asyncio.gather(*clients)
        await replica.start()  # sends what the spool holds
        logs = await prediction_logs(kafka_bootstrap, model_name, at_least=len(answered))
    finally:
        await replica.stop()
    assert set(refused) == {grpc.StatusCode.UNAVAILABLE}
    per_request = Counter(log.request_id for log in logs)
    assert not set(answered) - set(per_request), "answered OK, log lost"
    assert max(per_request.values()) == 1, "logged twice"
    # Requests cut short by the kill may have been spooled before it: never more.
    assert len(per_request) - len(answered) <= 8


def shippers_of(gateway: int) -> list[int]:
    """The process ids of a gateway's shipper processes (its children running the shipper)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        if parent == gateway and b"flywheel_gateway.shipper" in command:
            found.append(int(stat.parent.name))
    return found


async def test_a_shipper_killed_under_load_loses_no_log_and_sends_none_twice(
    platform: Platform, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=1)
    # Records sent, not yet acknowledged, at each kill:
    replica = gateway_of_its_own(platform, "shipper-killed", linger_ms=200)
    await replica.start()
    assert replica.process is not None
    gateway = replica.process.pid
    answered: list[str] = []
    killed: list[int] = []

    async def client(stub: pb_grpc.GRPCInferenceServiceStub, number: int) -> None:
        for index in range(1000):
            request = typed_request(model_name, iris.features[:2])
            request.id = f"{model_name}-{number}-{index}"
            await stub.ModelInfer(request, timeout=10)  # the gateway serves throughout
            answered.append(request.id)

    async def kill_shippers() -> None:
        """Kill the gateway's shipper three times, each after another 800 answers."""
        for round_ in range(1, 4):
            while len(answered) < 800 * round_:
                await asyncio.sleep(0.01)
            [shipper] = shippers_of(gateway)
            os.kill(shipper, signal.SIGKILL)
            killed.append(shipper)
            async with asyncio.timeout(30):  # the gateway starts another
                while not [pid for pid in shippers_of(gateway) if pid not in killed]:
                    await asyncio.sleep(0.05)

    try:
        async with secure_channel(replica.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await asyncio.gather(kill_shippers(), *(client(stub, number) for number in range(4)))
        logs = await prediction_logs(kafka_bootstrap, model_name, at_least=len(answered))
    finally:
        await replica.stop()
    assert len(killed) == 3
    per_request = Counter(log.request_id for log in logs)
    assert set(per_request) == set(answered), "answered OK, log lost"
    assert max(per_request.values()) == 1, "logged twice"
