"""gRPC transport of the retrain trigger: decode the request, call the use case, encode."""

from __future__ import annotations

from typing import Any

from flywheel.retrain.v1 import retrain_pb2 as pb
from flywheel.retrain.v1 import retrain_pb2_grpc as pb_grpc
from flywheel_common.errors import InvalidArgument, required
from flywheel_common.settings import Role
from flywheel_retrain.handlers import Retrainer
from flywheel_retrain.pipeline import log_path, read_tail

SERVICE_NAME = "flywheel.retrain.v1.RetrainService"
# Reads need `reader` and changes `writer` (the shared default); TriggerRetrain with
# ignore_cooldown checks for `admin` itself.
METHOD_ROLES: dict[str, Role] = {}
MAX_LOG_TAIL_LINES = 5000


class RetrainServicer(pb_grpc.RetrainServiceServicer):
    def __init__(self, retrainer: Retrainer, runs_dir: Any, default_tail: int) -> None:
        self._retrainer = retrainer
        self._runs_dir = runs_dir
        self._default_tail = default_tail

    async def SetRetrainPolicy(
        self, request: pb.SetRetrainPolicyRequest, context: Any
    ) -> pb.SetRetrainPolicyResponse:
        expected = request.expected_revision if request.HasField("expected_revision") else None
        policy = await self._retrainer.set_policy(request.policy, expected)
        return pb.SetRetrainPolicyResponse(policy=policy)

    async def GetRetrainPolicy(
        self, request: pb.GetRetrainPolicyRequest, context: Any
    ) -> pb.GetRetrainPolicyResponse:
        policy, is_default = await self._retrainer.get_policy(required(request.model, "model"))
        return pb.GetRetrainPolicyResponse(policy=policy, is_default=is_default)

    async def TriggerRetrain(
        self, request: pb.TriggerRetrainRequest, context: Any
    ) -> pb.TriggerRetrainResponse:
        run, replayed = await self._retrainer.trigger(
            required(request.model, "model"),
            request.reason,
            request.idempotency_key,
            request.ignore_cooldown,
        )
        return pb.TriggerRetrainResponse(run=run, replayed=replayed)

    async def ListRuns(self, request: pb.ListRunsRequest, context: Any) -> pb.ListRunsResponse:
        runs, token = await self._retrainer.list_runs(
            request.model, list(request.states), request.page_size, request.page_token
        )
        return pb.ListRunsResponse(runs=runs, next_page_token=token)

    async def GetRun(self, request: pb.GetRunRequest, context: Any) -> pb.GetRunResponse:
        if not 0 <= request.log_tail_lines <= MAX_LOG_TAIL_LINES:
            raise InvalidArgument(f"log_tail_lines must be between 0 and {MAX_LOG_TAIL_LINES}")
        run = await self._retrainer.get_run(required(request.run_id, "run_id"))
        lines, truncated = await read_tail(
            log_path(self._runs_dir, run.run_id), request.log_tail_lines or self._default_tail
        )
        return pb.GetRunResponse(run=run, log_tail=lines, log_truncated=truncated)

    async def CancelRun(self, request: pb.CancelRunRequest, context: Any) -> pb.CancelRunResponse:
        run = await self._retrainer.cancel(required(request.run_id, "run_id"), request.reason)
        return pb.CancelRunResponse(run=run)

    async def ApproveCandidate(
        self, request: pb.ApproveCandidateRequest, context: Any
    ) -> pb.ApproveCandidateResponse:
        run = await self._retrainer.approve(required(request.run_id, "run_id"), request.comment)
        return pb.ApproveCandidateResponse(run=run)

    async def RejectCandidate(
        self, request: pb.RejectCandidateRequest, context: Any
    ) -> pb.RejectCandidateResponse:
        run = await self._retrainer.reject(required(request.run_id, "run_id"), request.reason)
        return pb.RejectCandidateResponse(run=run)
