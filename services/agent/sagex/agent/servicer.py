"""gRPC glue for the agent: AgentService and google.longrunning.Operations.
Validation, the loop and persistence live in plain modules; this file only
translates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2
from grpc import aio

from sagex.agent import convert, validation
from sagex.agent.config import AgentConfig
from sagex.agent.jobs import JobManager
from sagex.agent.store import StaleRequest, Store, parse_page_token
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.api.agent.v1 import agent_service_pb2_grpc as pb_grpc
from sagex.remote.activation import ActivationClient
from sagex.server.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from sagex.server.operations import wait_seconds

OPERATION_PREFIX = "operations/"
_DONE = object()


def _after(token: str) -> tuple[float, str] | None:
    if not token:
        return None
    try:
        return parse_page_token(token)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.one("page_token", "not a token this server issued; pass next_page_token back "
                                                "unchanged") from None


def _job_id(name: str) -> str:
    if not name.startswith(OPERATION_PREFIX) or len(name) == len(OPERATION_PREFIX):
        raise InvalidArgument.one("name", f"{shown(name)!r} is not an operation name; expected 'operations/<id>'")
    return name[len(OPERATION_PREFIX):]


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, config: AgentConfig, activation: ActivationClient, store: Store, jobs: JobManager) -> None:
        self.config = config
        self.activation = activation
        self.store = store
        self.jobs = jobs

    async def ExplainFeature(
        self, request: pb.ExplainFeatureRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.ExplainFeatureResponse]:
        spec = await validation.explain_request(self.config, self.activation, request)
        events: asyncio.Queue[object] = asyncio.Queue()

        async def emit(event: object) -> None:
            events.put_nowait(convert.event(event, spec.feature_id))

        async def run() -> pb.Explanation:
            try:
                return await self.jobs.run_feature(spec, emit)
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
            return await self.jobs.submit(request, spec)
        except StaleRequest:
            raise InvalidArgument.one("request_id", f"{request.request_id!r} was already used for a different "
                                                    "request; use a new key") from None

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
        size = validation.page(request.page_size)
        if len(request.feature_ids) > 1000:
            raise InvalidArgument.one("feature_ids", "filter on at most 1000 features at once")
        items, token = await asyncio.to_thread(self.store.list_explanations, request.sae_id,
                                               list(request.feature_ids), size, _after(request.page_token))
        return pb.ListExplanationsResponse(explanations=items, next_page_token=token)


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    """AIP-151 operations over the agent's batch jobs."""

    def __init__(self, store: Store, jobs: JobManager) -> None:
        self.store = store
        self.jobs = jobs

    async def _get(self, name: str) -> operations_pb2.Operation:
        try:
            return await self.jobs.operation(_job_id(name))
        except KeyError:
            raise NotFound("operation", name, "list them with ListOperations") from None

    async def GetOperation(self, request: operations_pb2.GetOperationRequest, context: aio.ServicerContext
                           ) -> operations_pb2.Operation:
        return await self._get(request.name)

    async def ListOperations(self, request: operations_pb2.ListOperationsRequest, context: aio.ServicerContext
                             ) -> operations_pb2.ListOperationsResponse:
        if request.filter:
            raise InvalidArgument.one("filter", "filters are not supported; leave it empty")
        size = validation.page(request.page_size)
        ids, token = await asyncio.to_thread(self.store.list_jobs, size, _after(request.page_token))
        ops = []
        for job_id in ids:
            try:
                ops.append(await self.jobs.operation(job_id))
            except KeyError:  # deleted since it was listed
                continue
        return operations_pb2.ListOperationsResponse(operations=ops, next_page_token=token)

    async def CancelOperation(self, request: operations_pb2.CancelOperationRequest, context: aio.ServicerContext
                              ) -> empty_pb2.Empty:
        op = await self._get(request.name)
        if not op.done:
            await self.jobs.cancel(_job_id(request.name))
        return empty_pb2.Empty()

    async def DeleteOperation(self, request: operations_pb2.DeleteOperationRequest, context: aio.ServicerContext
                              ) -> empty_pb2.Empty:
        op = await self._get(request.name)
        if not op.done:
            raise FailedPrecondition(f"{request.name} is still running; cancel it first")
        await asyncio.to_thread(self.store.delete_job, _job_id(request.name))
        return empty_pb2.Empty()

    async def WaitOperation(self, request: operations_pb2.WaitOperationRequest, context: aio.ServicerContext
                            ) -> operations_pb2.Operation:
        await self._get(request.name)
        timeout = wait_seconds(request, context)
        try:
            return await self.jobs.wait(_job_id(request.name), timeout)
        except KeyError:
            raise NotFound("operation", request.name, "it was deleted") from None


__all__ = ["AgentServicer", "OperationsServicer"]
