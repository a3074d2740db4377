"""gRPC transport of the retrain trigger: decode the request, call the use case, encode."""

from __future__ import annotations

from typing import Any

from flywheel.retrain.v1 import retrain_pb2 as pb
from flywheel.retrain.v1 import retrain_pb2_grpc as pb_grpc
from flywheel_common.auth import require_role, visible
from flywheel_common.errors import InvalidArgument, required
from flywheel_common.grpc_server import Scope, Unscoped, model_field
from flywheel_common.settings import Role
from flywheel_retrain import converters
from flywheel_retrain.handlers import policies, queries, runs, starts
from flywheel_retrain.handlers.ports import Deps

SERVICE_NAME = "flywheel.retrain.v1.RetrainService"
# Reads need `reader` and changes `writer` (the shared default); TriggerRetrain with
# ignore_cooldown checks for `admin` itself.
METHOD_ROLES: dict[str, Role] = {}
# The role is needed on the model the request names; a run named by its id is checked once
# the use case has loaded it.
METHOD_SCOPES: dict[str, Scope] = {
    "SetRetrainPolicy": model_field("policy.model"),
    "GetRetrainPolicy": model_field("model"),
    "TriggerRetrain": model_field("model"),
    "ListRuns": Unscoped.FILTERED,
    "GetRun": Unscoped.CHECKED_IN_USE_CASE,
    "CancelRun": Unscoped.CHECKED_IN_USE_CASE,
    "ApproveCandidate": Unscoped.CHECKED_IN_USE_CASE,
    "RejectCandidate": Unscoped.CHECKED_IN_USE_CASE,
}
MAX_LOG_TAIL_LINES = 5000


class RetrainServicer(pb_grpc.RetrainServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def SetRetrainPolicy(
        self, request: pb.SetRetrainPolicyRequest, context: Any
    ) -> pb.SetRetrainPolicyResponse:
        expected = request.expected_revision if request.HasField("expected_revision") else None
        policy = await policies.set_policy(
            self._deps, converters.policy_of(request.policy), expected
        )
        return pb.SetRetrainPolicyResponse(policy=converters.policy_message(policy))

    async def GetRetrainPolicy(
        self, request: pb.GetRetrainPolicyRequest, context: Any
    ) -> pb.GetRetrainPolicyResponse:
        policy, is_default = await policies.get_policy(self._deps, required(request.model, "model"))
        return pb.GetRetrainPolicyResponse(
            policy=converters.policy_message(policy), is_default=is_default
        )

    async def TriggerRetrain(
        self, request: pb.TriggerRetrainRequest, context: Any
    ) -> pb.TriggerRetrainResponse:
        run, replayed = await starts.trigger_run(
            self._deps,
            required(request.model, "model"),
            request.reason,
            request.idempotency_key,
            request.ignore_cooldown,
        )
        return pb.TriggerRetrainResponse(run=converters.run_message(run), replayed=replayed)

    async def ListRuns(self, request: pb.ListRunsRequest, context: Any) -> pb.ListRunsResponse:
        if request.model:
            require_role(Role.READER, request.model)
        found, token = await queries.list_runs(
            self._deps,
            request.model,
            converters.run_states(list(request.states)),
            request.page_size,
            request.page_token,
        )
        return pb.ListRunsResponse(
            runs=visible([converters.run_message(run) for run in found], lambda r: r.model),
            next_page_token=token,
        )

    async def GetRun(self, request: pb.GetRunRequest, context: Any) -> pb.GetRunResponse:
        if not 0 <= request.log_tail_lines <= MAX_LOG_TAIL_LINES:
            raise InvalidArgument(f"log_tail_lines must be between 0 and {MAX_LOG_TAIL_LINES}")
        found = await queries.run_with_log(
            self._deps, required(request.run_id, "run_id"), request.log_tail_lines
        )
        return pb.GetRunResponse(
            run=converters.run_message(found.run),
            log_tail=found.log_tail,
            log_truncated=found.log_truncated,
        )

    async def CancelRun(self, request: pb.CancelRunRequest, context: Any) -> pb.CancelRunResponse:
        run = await runs.cancel(self._deps, required(request.run_id, "run_id"), request.reason)
        return pb.CancelRunResponse(run=converters.run_message(run))

    async def ApproveCandidate(
        self, request: pb.ApproveCandidateRequest, context: Any
    ) -> pb.ApproveCandidateResponse:
        run = await runs.approve(self._deps, required(request.run_id, "run_id"), request.comment)
        return pb.ApproveCandidateResponse(run=converters.run_message(run))

    async def RejectCandidate(
        self, request: pb.RejectCandidateRequest, context: Any
    ) -> pb.RejectCandidateResponse:
        run = await runs.reject(self._deps, required(request.run_id, "run_id"), request.reason)
        return pb.RejectCandidateResponse(run=converters.run_message(run))
