"""gRPC glue for the agent's AgentService (Operations: sagex.server.opservicer).
Validation, the loop and persistence live in plain modules; this file only
translates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from google.longrunning import operations_pb2
from grpc import aio

from sagex.agent import convert, validation
from sagex.agent.config import AgentConfig
from sagex.agent.jobs import AgentJobs, FeatureRunner
from sagex.agent.store import Store, parse_page_token
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.api.agent.v1 import agent_service_pb2_grpc as pb_grpc
from sagex.remote.activation import ActivationClient
from sagex.server.errors import InvalidArgument, NotFound
from sagex.server.operations import Operations, StaleRequest
from sagex.server.opservicer import page_size, stale_request

_DONE = object()


def _after(token: str) -> tuple[float, str] | None:
    if not token:
        return None
    try:
        return parse_page_token(token)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.one("page_token", "not a token this server issued; pass next_page_token back "
                                                "unchanged") from None


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, config: AgentConfig, activation: ActivationClient, store: Store, runner: FeatureRunner,
                 jobs: AgentJobs, operations: Operations) -> None:
        self.config = config
        self.activation = activation
        self.store = store
        self.runner = runner
        self.jobs = jobs
        self.operations = operations

    async def ExplainFeature(
        self, request: pb.ExplainFeatureRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.ExplainFeatureResponse]:
        spec = await validation.explain_request(self.config, self.activation, request)
        events: asyncio.Queue[object] = asyncio.Queue()

        async def emit(event: object) -> None:
            events.put_nowait(convert.event(event, spec.feature_id))

        async def run() -> pb.Explanation:
            try:
                return await self.runner.explain_and_record(spec, emit)
            finally:
                events.put_nowait(_DONE)

        task = asyncio.create_task(run())
        try:
            while (event := await events.get()) is not _DONE:
                yield event  # type: ignore[misc]
            yield pb.ExplainFeatureResponse(explanation=await task)
        finally:
            if not task.done():  # the client went away: stop spending on it
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def BatchExplainFeatures(
        self, request: pb.BatchExplainFeaturesRequest, context: aio.ServicerContext
    ) -> operations_pb2.Operation:
        spec = await validation.batch_request(self.config, self.activation, request)
        try:
            return await self.operations.submit(self.jobs.new(request, spec), request.request_id)
        except StaleRequest:
            raise stale_request(request.request_id) from None

    async def GetExplanation(self, request: pb.GetExplanationRequest, context: aio.ServicerContext
                             ) -> pb.GetExplanationResponse:
        if not request.name.startswith("explanations/"):
            raise InvalidArgument.one("name", "expected 'explanations/{sae_id}/{feature_id}/{run_id}'")
        found = await asyncio.to_thread(self.store.explanation, request.name)
        if found is None:
            raise NotFound("explanation", request.name, "list them with ListExplanations")
        return pb.GetExplanationResponse(explanation=found)

    async def ListExplanations(self, request: pb.ListExplanationsRequest, context: aio.ServicerContext
                               ) -> pb.ListExplanationsResponse:
        size = page_size(request.page_size)
        if len(request.feature_ids) > 1000:
            raise InvalidArgument.one("feature_ids", "filter on at most 1000 features at once")
        items, token = await asyncio.to_thread(self.store.list_explanations, request.sae_id,
                                               list(request.feature_ids), size, _after(request.page_token))
        return pb.ListExplanationsResponse(explanations=items, next_page_token=token)


__all__ = ["AgentServicer"]
