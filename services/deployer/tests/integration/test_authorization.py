"""Rollouts scoped per model: operators' tokens reach their models' rollouts only, and the
deployer's own registry token (reader on its models) is all it needs from the registry."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc

from flywheel.deployer.v1 import deployer_pb2 as pb
from flywheel.deployer.v1 import deployer_pb2_grpc as pb_grpc
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel_common.registration import registration
from flywheel_common.settings import AuthSettings, Role, StaticToken
from flywheel_testing.identity import bearer, expect
from flywheel_testing.models import IrisModels
from flywheel_testing.platform import in_process
from flywheel_testing.tls import secure_channel


async def test_rollouts_are_scoped_per_model_for_operators_and_for_the_deployer(
    kafka_bootstrap: str, tmp_path: Path, iris_models: IrisModels
) -> None:
    run = uuid.uuid4().hex[:8]
    a, b, c = (f"team-{team}-{run}-iris" for team in "abc")
    async with in_process(kafka_bootstrap, tmp_path) as services:
        registry = await services.registry(
            auth=AuthSettings(
                tokens={
                    "registry-admin": Role.ADMIN,
                    # The deployer reads versions of the models it deploys: reader on them.
                    "deployer": StaticToken(
                        role=Role.READER, models=[f"team-a-{run}-*", f"team-b-{run}-*"]
                    ),
                }
            )
        )
        deployer = await services.deployer(
            registry_token="deployer",
            auth=AuthSettings(
                tokens={
                    "ops-admin": Role.ADMIN,
                    "team-a-ops": StaticToken(role=Role.WRITER, models=[f"team-a-{run}-*"]),
                }
            ),
        )
        async with secure_channel(registry.grpc.address) as channel:
            stub = registry_grpc.RegistryServiceStub(channel)
            for model in (a, b, c):
                await stub.RegisterModelVersion(
                    iter(registration(model, iris_models.classifier)),
                    metadata=bearer("registry-admin"),
                )
        async with secure_channel(deployer.grpc.address) as channel:
            rollouts = pb_grpc.DeployerServiceStub(channel)
            mine = await rollouts.StartRollout(
                pb.StartRolloutRequest(model=a, version=1), metadata=bearer("team-a-ops")
            )
            theirs = await rollouts.StartRollout(
                pb.StartRolloutRequest(model=b, version=1), metadata=bearer("ops-admin")
            )
            denied = grpc.StatusCode.PERMISSION_DENIED
            await expect(
                rollouts.StartRollout(
                    pb.StartRolloutRequest(model=b, version=1), metadata=bearer("team-a-ops")
                ),
                denied,
                f"StartRollout needs role writer on model {b!r}",
            )
            rollout_b = theirs.rollout.rollout_id
            await expect(
                rollouts.GetRollout(
                    pb.GetRolloutRequest(rollout_id=rollout_b), metadata=bearer("team-a-ops")
                ),
                denied,
                f"needs role reader on model {b!r}",
            )
            await expect(
                rollouts.AbortRollout(
                    pb.AbortRolloutRequest(rollout_id=rollout_b), metadata=bearer("team-a-ops")
                ),
                denied,
                f"needs role writer on model {b!r}",
            )
            listed = await rollouts.ListRollouts(
                pb.ListRolloutsRequest(page_size=200), metadata=bearer("team-a-ops")
            )
            assert {r.model for r in listed.rollouts} == {a}
            found = await rollouts.GetRollout(
                pb.GetRolloutRequest(rollout_id=mine.rollout.rollout_id),
                metadata=bearer("team-a-ops"),
            )
            assert found.rollout.model == a
            # The deployer's registry token does not reach team c's models: a configuration
            # problem to fix, not an outage to retry.
            await expect(
                rollouts.StartRollout(
                    pb.StartRolloutRequest(model=c, version=1), metadata=bearer("ops-admin")
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
                "the registry refused this service's registry token",
            )
