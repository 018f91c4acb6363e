"""gRPC glue for scoring: ScoringService and google.longrunning.Operations.
Validation, scoring and comparison live in plain modules; this file only
translates."""

from __future__ import annotations

from collections.abc import Mapping

from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2
from grpc import aio

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.api.scoring.v1 import scoring_service_pb2_grpc as pb_grpc
from sagex.scoring import convert, validation
from sagex.scoring.engine import ExplanationRef, ScoringEngine
from sagex.scoring.explainers import Explainer
from sagex.scoring.jobs import ScoringJobs
from sagex.scoring.operations import PREFIX, Operations, StaleRequest
from sagex.server.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from sagex.server.operations import wait_seconds


def _job_id(name: str) -> str:
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise InvalidArgument.one("name", f"{shown(name)!r} is not an operation name; expected 'operations/<id>'")
    return name[len(PREFIX):]


def _stale(request_id: str) -> InvalidArgument:
    return InvalidArgument.one("request_id", f"{request_id!r} was already used for a different request; "
                                             "use a new key")


class ScoringServicer(pb_grpc.ScoringServiceServicer):
    def __init__(self, engine: ScoringEngine, explainers: Mapping[str, Explainer], operations: Operations,
                 jobs: ScoringJobs) -> None:
        self.engine = engine
        self.explainers = explainers
        self.operations = operations
        self.jobs = jobs

    async def ScoreExplanation(self, request: pb.ScoreExplanationRequest, context: aio.ServicerContext
                               ) -> pb.ScoreExplanationResponse:
        scorers = await validation.score_request(self.engine.config, self.engine.activation, request)
        ex = request.explanation
        results = await self.engine.score(ExplanationRef(ex.sae_id, ex.feature_id, ex.text), scorers, request.seed)
        return pb.ScoreExplanationResponse(explanation=ex, results=[convert.scorer_result(r) for r in results])

    async def BatchScoreExplanations(self, request: pb.BatchScoreExplanationsRequest, context: aio.ServicerContext
                                     ) -> operations_pb2.Operation:
        scorers = await validation.batch_request(self.engine.config, self.engine.activation, request)
        try:
            return await self.operations.submit(await self.jobs.batch(request, scorers), request.request_id)
        except StaleRequest:
            raise _stale(request.request_id) from None

    async def CompareExplainers(self, request: pb.CompareExplainersRequest, context: aio.ServicerContext
                                ) -> operations_pb2.Operation:
        scorers = await validation.compare_request(self.engine.config, self.engine.activation, list(self.explainers),
                                                   request)
        try:
            return await self.operations.submit(await self.jobs.compare(request, scorers), request.request_id)
        except StaleRequest:
            raise _stale(request.request_id) from None


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    """AIP-151 operations over the stored scoring jobs."""

    def __init__(self, operations: Operations) -> None:
        self.operations = operations

    async def _get(self, name: str) -> operations_pb2.Operation:
        try:
            return await self.operations.get(_job_id(name))
        except KeyError:
            raise self._not_found(name) from None

    def _not_found(self, name: str) -> NotFound:
        hours = self.operations.retention_s / 3600
        return NotFound("operation", name, f"it was deleted, or it finished more than {hours:g} hours ago "
                                           "(retention_hours in [scoring]); list them with ListOperations")

    async def GetOperation(self, request: operations_pb2.GetOperationRequest, context: aio.ServicerContext
                           ) -> operations_pb2.Operation:
        return await self._get(request.name)

    async def ListOperations(self, request: operations_pb2.ListOperationsRequest, context: aio.ServicerContext
                             ) -> operations_pb2.ListOperationsResponse:
        if request.filter:
            raise InvalidArgument.one("filter", "filters are not supported; leave it empty")
        try:
            ops, token = await self.operations.list(validation.page(request.page_size), request.page_token)
        except KeyError:
            raise InvalidArgument.one("page_token", "not a token this server issued (or its operation was "
                                                    "deleted); start again without one") from None
        return operations_pb2.ListOperationsResponse(operations=ops, next_page_token=token)

    async def CancelOperation(self, request: operations_pb2.CancelOperationRequest, context: aio.ServicerContext
                              ) -> empty_pb2.Empty:
        try:
            await self.operations.cancel(_job_id(request.name))
        except KeyError:
            raise self._not_found(request.name) from None
        return empty_pb2.Empty()

    async def DeleteOperation(self, request: operations_pb2.DeleteOperationRequest, context: aio.ServicerContext
                              ) -> empty_pb2.Empty:
        try:
            deleted = await self.operations.delete(_job_id(request.name))
        except KeyError:
            raise self._not_found(request.name) from None
        if not deleted:
            raise FailedPrecondition(f"{request.name} is still running; cancel it first")
        return empty_pb2.Empty()

    async def WaitOperation(self, request: operations_pb2.WaitOperationRequest, context: aio.ServicerContext
                            ) -> operations_pb2.Operation:
        await self._get(request.name)
        timeout = wait_seconds(request, context)
        try:
            return await self.operations.wait(_job_id(request.name), timeout)
        except KeyError:  # deleted while waiting
            raise self._not_found(request.name) from None


__all__ = ["OperationsServicer", "ScoringServicer"]
