"""gRPC transport of the deployer: decode the request, call the use case, encode the reply."""

from __future__ import annotations

from typing import Any

from flywheel.deployer.v1 import deployer_pb2 as pb
from flywheel.deployer.v1 import deployer_pb2_grpc as pb_grpc
from flywheel_common.auth import require_role, visible
from flywheel_common.errors import required
from flywheel_common.grpc_server import Scope, Unscoped, model_field
from flywheel_common.settings import Role
from flywheel_deployer import converters
from flywheel_deployer.handlers import operator, policies, queries, rollouts
from flywheel_deployer.handlers.ports import Deps, RolloutView

SERVICE_NAME = "flywheel.deployer.v1.DeployerService"
# Reads need `reader` and changes `writer`: the shared default.
METHOD_ROLES: dict[str, Role] = {}
# The role is needed on the model the request names; a rollout named by its id is checked
# once the use case has loaded it.
_MODEL = model_field("model")
METHOD_SCOPES: dict[str, Scope] = {
    "SetDeploymentPolicy": model_field("policy.model"),
    "GetDeploymentPolicy": _MODEL,
    "StartRollout": _MODEL,
    "GetRollout": Unscoped.CHECKED_IN_USE_CASE,
    "ListRollouts": Unscoped.FILTERED,
    "PauseRollout": Unscoped.CHECKED_IN_USE_CASE,
    "ResumeRollout": Unscoped.CHECKED_IN_USE_CASE,
    "PromoteNow": Unscoped.CHECKED_IN_USE_CASE,
    "AbortRollout": Unscoped.CHECKED_IN_USE_CASE,
    "Rollback": _MODEL,
    "GetDeploymentState": _MODEL,
}


def _rollout(found: RolloutView) -> Any:
    return converters.rollout_message(found.rollout, found.pending_gateways)


class DeployerServicer(pb_grpc.DeployerServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def SetDeploymentPolicy(
        self, request: pb.SetDeploymentPolicyRequest, context: Any
    ) -> pb.SetDeploymentPolicyResponse:
        expected = request.expected_revision if request.HasField("expected_revision") else None
        policy = await policies.set_policy(
            self._deps, converters.policy_of(request.policy), expected
        )
        return pb.SetDeploymentPolicyResponse(policy=converters.policy_message(policy))

    async def GetDeploymentPolicy(
        self, request: pb.GetDeploymentPolicyRequest, context: Any
    ) -> pb.GetDeploymentPolicyResponse:
        policy, is_default = await policies.get_policy(self._deps, required(request.model, "model"))
        return pb.GetDeploymentPolicyResponse(
            policy=converters.policy_message(policy), is_default=is_default
        )

    async def StartRollout(
        self, request: pb.StartRolloutRequest, context: Any
    ) -> pb.StartRolloutResponse:
        model = required(request.model, "model")
        command = rollouts.StartRollout(
            model,
            request.version,
            strategy=converters.requested_strategy(request.strategy),
            policy_override=(
                converters.override_of(model, request.policy_override)
                if request.HasField("policy_override")
                else None
            ),
            reason=request.reason,
            supersede=request.supersede,
            idempotency_key=request.idempotency_key,
        )
        started = await rollouts.start_rollout(self._deps, command)
        return pb.StartRolloutResponse(rollout=_rollout(started))

    async def GetRollout(
        self, request: pb.GetRolloutRequest, context: Any
    ) -> pb.GetRolloutResponse:
        found = await queries.get_rollout(self._deps, required(request.rollout_id, "rollout_id"))
        return pb.GetRolloutResponse(rollout=_rollout(found))

    async def ListRollouts(
        self, request: pb.ListRolloutsRequest, context: Any
    ) -> pb.ListRolloutsResponse:
        if request.model:
            require_role(Role.READER, request.model)
        found, token = await queries.list_rollouts(
            self._deps,
            request.model,
            converters.phases_of(request.phases),
            request.page_size,
            request.page_token,
        )
        return pb.ListRolloutsResponse(
            rollouts=visible([_rollout(each) for each in found], lambda r: r.model),
            next_page_token=token,
        )

    async def PauseRollout(
        self, request: pb.PauseRolloutRequest, context: Any
    ) -> pb.PauseRolloutResponse:
        paused = await operator.pause(
            self._deps, required(request.rollout_id, "rollout_id"), request.reason
        )
        return pb.PauseRolloutResponse(rollout=_rollout(paused))

    async def ResumeRollout(
        self, request: pb.ResumeRolloutRequest, context: Any
    ) -> pb.ResumeRolloutResponse:
        resumed = await operator.resume(self._deps, required(request.rollout_id, "rollout_id"))
        return pb.ResumeRolloutResponse(rollout=_rollout(resumed))

    async def PromoteNow(
        self, request: pb.PromoteNowRequest, context: Any
    ) -> pb.PromoteNowResponse:
        promoted = await operator.promote_now(
            self._deps, required(request.rollout_id, "rollout_id"), request.version, request.reason
        )
        return pb.PromoteNowResponse(rollout=_rollout(promoted))

    async def AbortRollout(
        self, request: pb.AbortRolloutRequest, context: Any
    ) -> pb.AbortRolloutResponse:
        aborted = await operator.abort(
            self._deps, required(request.rollout_id, "rollout_id"), request.reason
        )
        return pb.AbortRolloutResponse(rollout=_rollout(aborted))

    async def Rollback(self, request: pb.RollbackRequest, context: Any) -> pb.RollbackResponse:
        rolled_back = await operator.rollback(
            self._deps, required(request.model, "model"), request.to_version, request.reason
        )
        return pb.RollbackResponse(rollout=_rollout(rolled_back))

    async def GetDeploymentState(
        self, request: pb.GetDeploymentStateRequest, context: Any
    ) -> pb.GetDeploymentStateResponse:
        found = await queries.deployment_state(self._deps, required(request.model, "model"))
        response = pb.GetDeploymentStateResponse(
            state=converters.state_message(found.state),
            gateways=[converters.readiness_message(g) for g in found.gateways],
        )
        if found.active is not None:
            response.active_rollout.CopyFrom(_rollout(found.active))
        return response
