"""AIP-151 operations over batch jobs: get, list with pages, wait, cancel, delete,
and stored explanations listed newest first with pages."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.agent.v1 import agent_service_pb2 as pb
from tests.agent.conftest import SAE, AgentClient

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def features(stub: object, dead: bool, n: int) -> list[int]:
    stats = await stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(sae_id=SAE))  # type: ignore[attr-defined]
    freq = np.frombuffer(stats.window_frequency, "<f4")
    chosen = np.flatnonzero(freq == 0) if dead else np.flatnonzero((freq > 0.02) & (freq < 0.3))
    assert len(chosen) >= n
    return [int(f) for f in chosen[:n]]


def wait(name: str, seconds: float) -> operations_pb2.WaitOperationRequest:
    return operations_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(
        seconds=int(seconds), nanos=int((seconds % 1) * 1e9)))


async def test_dead_features_are_triaged_and_jobs_list_in_pages(agent: AgentClient, stub: object) -> None:
    dead = await features(stub, dead=True, n=3)
    names = []
    for f in dead:
        op = await agent.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(sae_id=SAE, feature_ids=[f]))
        done = await agent.ops.WaitOperation(wait(op.name, 60))
        assert done.done and not done.HasField("error")
        names.append(op.name)
        response = pb.BatchExplainFeaturesResponse()
        done.response.Unpack(response)
        ex = (await agent.agent.GetExplanation(pb.GetExplanationRequest(name=response.explanations[0]))).explanation
        assert ex.triage_class == "dead" and ex.stop_reason == "triage" and [lb.name for lb in ex.labels] == ["dead"]
        assert ex.usage.llm_calls == 0 and not ex.hypotheses

    first = await agent.ops.ListOperations(operations_pb2.ListOperationsRequest(page_size=2))
    assert [o.name for o in first.operations] == names[::-1][:2] and first.next_page_token
    rest = await agent.ops.ListOperations(operations_pb2.ListOperationsRequest(
        page_size=2, page_token=first.next_page_token))
    assert [o.name for o in rest.operations] == names[:1] and not rest.next_page_token

    page = await agent.agent.ListExplanations(pb.ListExplanationsRequest(sae_id=SAE, page_size=2))
    more = await agent.agent.ListExplanations(pb.ListExplanationsRequest(sae_id=SAE, page_size=2,
                                                                         page_token=page.next_page_token))
    listed = [e.feature_id for e in [*page.explanations, *more.explanations]]
    assert listed == dead[::-1]


async def test_cancel_stops_a_job_and_keeps_what_was_done(agent: AgentClient, stub: object) -> None:
    live = await features(stub, dead=False, n=12)
    op = await agent.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
        sae_id=SAE, feature_ids=live, concurrency=1, skip_triage=True))
    pending = await agent.ops.WaitOperation(wait(op.name, 0.2))
    assert not pending.done  # a short wait returns the operation as it stands
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await agent.ops.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    await agent.ops.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    cancelled = await agent.ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
    assert cancelled.done and cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    meta = pb.BatchExplainFeaturesMetadata()
    cancelled.metadata.Unpack(meta)
    assert meta.total == 12 and meta.done + meta.failed < 12

    await agent.ops.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await agent.ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("call", "field"), [
    ("get", "name"), ("page_token", "page_token"), ("filter", "filter"), ("explanation", "name"),
])
async def test_bad_operation_requests(agent: AgentClient, call: str, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if call == "get":
            await agent.ops.GetOperation(operations_pb2.GetOperationRequest(name="jobs/123"))
        elif call == "page_token":
            await agent.ops.ListOperations(operations_pb2.ListOperationsRequest(page_token="not-a-token"))
        elif call == "filter":
            await agent.ops.ListOperations(operations_pb2.ListOperationsRequest(filter="done=true"))
        else:
            await agent.agent.GetExplanation(pb.GetExplanationRequest(name="features/1"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)


async def test_unknown_names_are_not_found(agent: AgentClient) -> None:
    for call in (agent.ops.GetOperation(operations_pb2.GetOperationRequest(name="operations/nope")),
                 agent.agent.GetExplanation(pb.GetExplanationRequest(name=f"explanations/{SAE}/1/nope"))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
