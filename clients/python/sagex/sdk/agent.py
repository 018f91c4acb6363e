"""The SAGE agent: explain one feature (streamed), many as a job, read results."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.api.agent.v1 import agent_service_pb2_grpc as pb_grpc
from sagex.sdk import _convert, _requests
from sagex.sdk._channel import ChannelConfig
from sagex.sdk.errors import SageError, from_rpc_error
from sagex.sdk.types import AgentEvent, Explanation, JobProgress

EXPLAIN_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Options:
    """How to explain: the policy ("symbolic" and "heuristic" need no LLM; "openai"
    uses the agent's endpoint; "auto" tries "symbolic" first) and budgets. Zero means the server's default."""

    policy: str = ""
    model: str = ""
    num_hypotheses: int = 0
    max_rounds: int = 0
    max_probes_per_hypothesis: int = 0
    max_llm_tokens: int = 0
    max_cost_usd: float = 0.0
    max_seconds: float = 0.0
    skip_triage: bool = False

    def policy_pb(self) -> pb.PolicySpec:
        return _requests.policy(self.policy, self.model, self.num_hypotheses)

    def budget_pb(self) -> pb.Budget:
        return _requests.budget(self.max_rounds, self.max_probes_per_hypothesis, self.max_llm_tokens,
                                self.max_cost_usd, self.max_seconds)


class JobFailed(SageError):
    """A batch job ended in error or was cancelled."""


def _explain_request(sae: str, feature: int, options: Options) -> pb.ExplainFeatureRequest:
    return pb.ExplainFeatureRequest(sae_id=sae, feature_id=feature, policy=options.policy_pb(),
                                    budget=options.budget_pb(), skip_triage=options.skip_triage)


def _batch_request(sae: str, features: Sequence[int], options: Options, concurrency: int,
                   request_id: str | None) -> pb.BatchExplainFeaturesRequest:
    return pb.BatchExplainFeaturesRequest(
        sae_id=sae, feature_ids=list(features), policy=options.policy_pb(), budget=options.budget_pb(),
        concurrency=concurrency, skip_triage=options.skip_triage,
        request_id=request_id or uuid.uuid4().hex,  # makes a retried submit safe
    )


class Operation:
    """A batch job: ``wait`` for it (with progress), ``refresh``, ``cancel``, then ``result``."""

    def __init__(self, agent: Agent, op: operations_pb2.Operation) -> None:
        self._agent = agent
        self._op = op

    @property
    def name(self) -> str:
        return self._op.name

    @property
    def progress(self) -> JobProgress:
        return _convert.progress(self._op)

    def refresh(self) -> JobProgress:
        self._op = self._agent._call(self._agent._ops.GetOperation, operations_pb2.GetOperationRequest(name=self.name))
        return self.progress

    def wait(self, timeout: float | None = None, on_progress: Callable[[JobProgress], None] | None = None,
             poll_s: float = 2.0) -> JobProgress:
        """Block until the job is done (or ``timeout`` seconds pass), calling ``on_progress`` as it advances."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._op.done:
            step = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if step <= 0:
                break
            self._op = self._agent._call(self._agent._ops.WaitOperation, _requests.wait(self.name, step),
                                         timeout=step + 30)
            if on_progress is not None:
                on_progress(self.progress)
        return self.progress

    def cancel(self) -> None:
        self._agent._call(self._agent._ops.CancelOperation, operations_pb2.CancelOperationRequest(name=self.name))
        self.refresh()

    def result(self, timeout: float | None = None) -> list[Explanation]:
        """The explanations in feature order, waiting for the job first."""
        progress = self.wait(timeout)
        if not progress.finished:
            raise TimeoutError(f"{self.name} is still running ({progress.remaining} features left)")
        if self._op.HasField("error"):
            raise JobFailed(f"{self.name}: {self._op.error.message}")
        response = pb.BatchExplainFeaturesResponse()
        self._op.response.Unpack(response)
        return [self._agent.get(name) for name in response.explanations]


class Agent:
    def __init__(self, channel: grpc.Channel, config: ChannelConfig) -> None:
        self._stub = pb_grpc.AgentServiceStub(channel)
        self._ops = operations_pb2_grpc.OperationsStub(channel)
        self._config = config

    def _call(self, method, request, timeout: float | None = None):  # type: ignore[no-untyped-def]
        try:
            return method(request, timeout=timeout or self._config.timeout_s, metadata=self._config.metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def stream(self, sae: str, feature: int, options: Options = Options()) -> Iterator[AgentEvent]:
        """Explain one feature, yielding every state change, hypothesis, probe and
        verdict; the last event carries the explanation. Closing the iterator
        cancels the run on the server."""
        call = self._stub.ExplainFeature(_explain_request(sae, feature, options), timeout=EXPLAIN_TIMEOUT_S,
                                         metadata=self._config.metadata())
        try:
            for msg in call:
                yield _convert.event(msg)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def explain(self, sae: str, feature: int, options: Options = Options()) -> Explanation:
        """Explain one feature and return the stored explanation."""
        for event in self.stream(sae, feature, options):
            if event.explanation is not None:
                return event.explanation
        raise SageError("the agent ended the stream without an explanation")

    def explain_many(self, sae: str, features: Sequence[int], options: Options = Options(), *,
                     concurrency: int = 0, request_id: str | None = None) -> Operation:
        """Start a batch job; the same ``request_id`` returns the same job."""
        op = self._call(self._stub.BatchExplainFeatures, _batch_request(sae, features, options, concurrency,
                                                                        request_id))
        return Operation(self, op)

    def operation(self, name: str) -> Operation:
        return Operation(self, self._call(self._ops.GetOperation, operations_pb2.GetOperationRequest(name=name)))

    def get(self, name: str) -> Explanation:
        return _convert.explanation(self._call(self._stub.GetExplanation, pb.GetExplanationRequest(name=name))
                                    .explanation)

    def list(self, sae: str = "", features: Sequence[int] = (), page_size: int = 100) -> Iterator[Explanation]:
        """Stored explanations, newest first, across pages."""
        token = ""
        while True:
            page = self._call(self._stub.ListExplanations, pb.ListExplanationsRequest(
                sae_id=sae, feature_ids=list(features), page_size=page_size, page_token=token))
            yield from (_convert.explanation(e) for e in page.explanations)
            token = page.next_page_token
            if not token:
                return


class AsyncOperation:
    """A batch job: ``await wait()`` (with progress), ``refresh``, ``cancel``, then ``result``."""

    def __init__(self, agent: AsyncAgent, op: operations_pb2.Operation) -> None:
        self._agent = agent
        self._op = op

    @property
    def name(self) -> str:
        return self._op.name

    @property
    def progress(self) -> JobProgress:
        return _convert.progress(self._op)

    async def refresh(self) -> JobProgress:
        self._op = await self._agent._call(self._agent._ops.GetOperation,
                                           operations_pb2.GetOperationRequest(name=self.name))
        return self.progress

    async def wait(self, timeout: float | None = None, on_progress: Callable[[JobProgress], None] | None = None,
                   poll_s: float = 2.0) -> JobProgress:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._op.done:
            step = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if step <= 0:
                break
            self._op = await self._agent._call(self._agent._ops.WaitOperation, _requests.wait(self.name, step),
                                               timeout=step + 30)
            if on_progress is not None:
                on_progress(self.progress)
        return self.progress

    async def cancel(self) -> None:
        await self._agent._call(self._agent._ops.CancelOperation, operations_pb2.CancelOperationRequest(name=self.name))
        await self.refresh()

    async def result(self, timeout: float | None = None) -> list[Explanation]:
        progress = await self.wait(timeout)
        if not progress.finished:
            raise TimeoutError(f"{self.name} is still running ({progress.remaining} features left)")
        if self._op.HasField("error"):
            raise JobFailed(f"{self.name}: {self._op.error.message}")
        response = pb.BatchExplainFeaturesResponse()
        self._op.response.Unpack(response)
        return [await self._agent.get(name) for name in response.explanations]


class AsyncAgent:
    def __init__(self, channel: grpc.aio.Channel, config: ChannelConfig) -> None:
        self._stub = pb_grpc.AgentServiceStub(channel)
        self._ops = operations_pb2_grpc.OperationsStub(channel)
        self._config = config

    async def _call(self, method, request, timeout: float | None = None):  # type: ignore[no-untyped-def]
        try:
            return await method(request, timeout=timeout or self._config.timeout_s, metadata=self._config.metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def stream(self, sae: str, feature: int, options: Options = Options()) -> AsyncIterator[AgentEvent]:
        call = self._stub.ExplainFeature(_explain_request(sae, feature, options), timeout=EXPLAIN_TIMEOUT_S,
                                         metadata=self._config.metadata())
        try:
            async for msg in call:
                yield _convert.event(msg)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def explain(self, sae: str, feature: int, options: Options = Options()) -> Explanation:
        async for event in self.stream(sae, feature, options):
            if event.explanation is not None:
                return event.explanation
        raise SageError("the agent ended the stream without an explanation")

    async def explain_many(self, sae: str, features: Sequence[int], options: Options = Options(), *,
                           concurrency: int = 0, request_id: str | None = None) -> AsyncOperation:
        op = await self._call(self._stub.BatchExplainFeatures, _batch_request(sae, features, options, concurrency,
                                                                              request_id))
        return AsyncOperation(self, op)

    async def operation(self, name: str) -> AsyncOperation:
        return AsyncOperation(self, await self._call(self._ops.GetOperation,
                                                     operations_pb2.GetOperationRequest(name=name)))

    async def get(self, name: str) -> Explanation:
        response = await self._call(self._stub.GetExplanation, pb.GetExplanationRequest(name=name))
        return _convert.explanation(response.explanation)

    async def list(self, sae: str = "", features: Sequence[int] = (), page_size: int = 100
                   ) -> AsyncIterator[Explanation]:
        token = ""
        while True:
            page = await self._call(self._stub.ListExplanations, pb.ListExplanationsRequest(
                sae_id=sae, feature_ids=list(features), page_size=page_size, page_token=token))
            for e in page.explanations:
                yield _convert.explanation(e)
            token = page.next_page_token
            if not token:
                return
