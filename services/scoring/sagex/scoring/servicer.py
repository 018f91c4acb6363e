"""gRPC glue for scoring's ScoringService (Operations: sagex.server.opservicer).
Validation, scoring and comparison live in plain modules; this file only
translates."""

from __future__ import annotations

from collections.abc import Mapping

from google.longrunning import operations_pb2
from grpc import aio

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.api.scoring.v1 import scoring_service_pb2_grpc as pb_grpc
from sagex.scoring import convert, validation
from sagex.scoring.engine import ExplanationRef, ScoringEngine
from sagex.scoring.explainers import Explainer
from sagex.scoring.jobs import ScoringJobs
from sagex.server.operations import Operations, StaleRequest
from sagex.server.opservicer import stale_request


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
            raise stale_request(request.request_id) from None

    async def CompareExplainers(self, request: pb.CompareExplainersRequest, context: aio.ServicerContext
                                ) -> operations_pb2.Operation:
        scorers = await validation.compare_request(self.engine.config, self.engine.activation, list(self.explainers),
                                                   request)
        try:
            return await self.operations.submit(await self.jobs.compare(request, scorers), request.request_id)
        except StaleRequest:
            raise stale_request(request.request_id) from None


__all__ = ["ScoringServicer"]
