"""gRPC transport of the deployer: decode the request, call the use case, encode the reply."""

from __future__ import annotations

from typing import Any

from flywheel.deployer.v1 import deployer_pb2 as pb
from flywheel.deployer.v1 import deployer_pb2_grpc as pb_grpc
from flywheel_common.errors import required
from flywheel_common.settings import Role
from flywheel_deployer.handlers import Deployer

SERVICE_NAME = "flywheel.deployer.v1.DeployerService"
# Reads need `reader` and changes `writer`: the shared default.
METHOD_ROLES: dict[str, Role] = {}


class DeployerServicer(pb_grpc.DeployerServiceServicer):
    def __init__(self, deployer: Deployer) -> None:
        self._deployer = deployer

    async def SetDeploymentPolicy(
        self, request: pb.SetDeploymentPolicyRequest, context: Any
    ) -> pb.SetDeploymentPolicyResponse:
        expected = request.expected_revision if request.HasField("expected_revision") else None
        policy = await self._deployer.set_policy(request.policy, expected)
        return pb.SetDeploymentPolicyResponse(policy=policy)

    async def GetDeploymentPolicy(
        self, request: pb.GetDeploymentPolicyRequest, context: Any
    ) -> pb.GetDeploymentPolicyResponse:
        policy, is_default = await self._deployer.get_policy(required(request.model, "model"))
        return pb.GetDeploymentPolicyResponse(policy=policy, is_default=is_default)

    async def StartRollout(
        self, request: pb.StartRolloutRequest, context: Any
    ) -> pb.StartRolloutResponse:
        rollout = await self._deployer.start_rollout(
            required(request.model, "model"),
            request.version,
            strategy=request.strategy,
            policy_override=(
                request.policy_override if request.HasField("policy_override") else None
            ),
            reason=request.reason,
            supersede=request.supersede,
            idempotency_key=request.idempotency_key,
        )
        return pb.StartRolloutResponse(rollout=rollout)

    async def GetRollout(
        self, request: pb.GetRolloutRequest, context: Any
    ) -> pb.GetRolloutResponse:
        rollout = await self._deployer.get_rollout(required(request.rollout_id, "rollout_id"))
        return pb.GetRolloutResponse(rollout=rollout)

    async def ListRollouts(
        self, request: pb.ListRolloutsRequest, context: Any
    ) -> pb.ListRolloutsResponse:
        rollouts, token = await self._deployer.list_rollouts(
            request.model, list(request.phases), request.page_size, request.page_token
        )
        return pb.ListRolloutsResponse(rollouts=rollouts, next_page_token=token)

    async def PauseRollout(
        self, request: pb.PauseRolloutRequest, context: Any
    ) -> pb.PauseRolloutResponse:
        rollout = await self._deployer.pause(
            required(request.rollout_id, "rollout_id"), request.reason
        )
        return pb.PauseRolloutResponse(rollout=rollout)

    async def ResumeRollout(
        self, request: pb.ResumeRolloutRequest, context: Any
    ) -> pb.ResumeRolloutResponse:
        rollout = await self._deployer.resume(required(request.rollout_id, "rollout_id"))
        return pb.ResumeRolloutResponse(rollout=rollout)

    async def PromoteNow(
        self, request: pb.PromoteNowRequest, context: Any
    ) -> pb.PromoteNowResponse:
        rollout = await self._deployer.promote_now(
            required(request.rollout_id, "rollout_id"), request.version, request.reason
        )
        return pb.PromoteNowResponse(rollout=rollout)

    async def AbortRollout(
        self, request: pb.AbortRolloutRequest, context: Any
    ) -> pb.AbortRolloutResponse:
        rollout = await self._deployer.abort(
            required(request.rollout_id, "rollout_id"), request.reason
        )
        return pb.AbortRolloutResponse(rollout=rollout)

    async def Rollback(self, request: pb.RollbackRequest, context: Any) -> pb.RollbackResponse:
        rollout = await self._deployer.rollback(
            required(request.model, "model"), request.to_version, request.reason
        )
        return pb.RollbackResponse(rollout=rollout)

    async def GetDeploymentState(
        self, request: pb.GetDeploymentStateRequest, context: Any
    ) -> pb.GetDeploymentStateResponse:
        state, gateways, active = await self._deployer.deployment_state(
            required(request.model, "model")
        )
        response = pb.GetDeploymentStateResponse(state=state, gateways=gateways)
        if active is not None:
            response.active_rollout.CopyFrom(active)
        return response
