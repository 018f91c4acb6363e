"""Regressions found by fuzzing (tests/fuzz): each test pins one fixed bug."""

from __future__ import annotations

import grpc
import pytest
from google.longrunning import operations_pb2
from grpc_status import rpc_status

from sagex.api.agent.v1 import agent_service_pb2 as pb
from tests.agent.conftest import SAE, AgentClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Statuses travel in HTTP/2 trailers; clients drop trailers past 8 KiB (soft) / 16 KiB (hard).
SMALL = 2_000
LONG = "日" * 5_000


async def test_long_names_and_ids_are_quoted_short(agent: AgentClient) -> None:
    # Was: names, SAE ids and policy names echoed whole, so the client saw RESOURCE_EXHAUSTED
    # ("received metadata size exceeds hard limit") instead of the error. Statuses are now
    # clipped, and the agent quotes the value short so the message keeps what to fix.
    calls = [
        (grpc.StatusCode.INVALID_ARGUMENT, "is not an operation name",
         agent.ops.GetOperation(operations_pb2.GetOperationRequest(name=LONG))),
        (grpc.StatusCode.NOT_FOUND, "list them with ListOperations",
         agent.ops.GetOperation(operations_pb2.GetOperationRequest(name=f"operations/{LONG}"))),
        (grpc.StatusCode.NOT_FOUND, "list them with ListOperations",
         agent.ops.WaitOperation(operations_pb2.WaitOperationRequest(name=f"operations/{LONG}"))),
        (grpc.StatusCode.NOT_FOUND, "list them with ListExplanations",
         agent.agent.GetExplanation(pb.GetExplanationRequest(name=f"explanations/{LONG}"))),
        (grpc.StatusCode.NOT_FOUND, "the activation service serves",
         agent.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(sae_id=LONG, feature_ids=[1]))),
        (grpc.StatusCode.INVALID_ARGUMENT, "is not one of heuristic, symbolic, openai, auto",
         agent.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
             sae_id=SAE, feature_ids=[1], policy=pb.PolicySpec(policy=LONG)))),
    ]
    for code, hint, call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == code, err.value.details()
        assert " characters)" in err.value.details() and hint in err.value.details()
        status = rpc_status.from_call(err.value)
        assert status is not None and len(status.SerializeToString()) < SMALL
