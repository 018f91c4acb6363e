"""The openai policy end to end against llama.cpp's real server (make llm-setup) with
SmolLM2-135M-Instruct: a batch job of several features at once, against a server
that answers one request at a time. The backend settles on json_object with the
schema (the grammar), queues the calls in our client, and every feature finishes:
a 135M model's explanations are poor, the path must not be."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from sagex.agent.config import AgentConfig, ExemplarConfig
from sagex.agent.server import running_agent_server
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.llm.local import LlamaServer
from sagex.server.lifecycle import channel_options
from tests.agent.conftest import SAE, AgentClient, with_llm

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


async def test_a_batch_job_finishes_every_feature_through_the_real_server(
    agent_config: AgentConfig, llama_server: LlamaServer, token_features: dict[int, str]
) -> None:
    # Lean prompts and few steps: a 2-core CI machine answers slowly.
    lean = replace(agent_config, default_policy="heuristic", num_hypotheses=3,
                   exemplars=ExemplarConfig(top_k=5, bands=2, per_band=1, non_activating=2),
                   budget=replace(agent_config.budget, max_reviews=0, max_probes_per_hypothesis=2))
    config = with_llm(lean, base_url=llama_server.base_url, model=llama_server.model, max_output_tokens=256,
                      timeout_s=600, max_retries=1, max_in_flight=1)
    features = list(token_features)[:2]
    budget = pb.Budget(max_rounds=1, max_seconds=1200)
    async with running_agent_server(config) as (running, runtime):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options()) as channel:
            client = AgentClient(channel)
            op = await client.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
                sae_id=SAE, feature_ids=features, skip_triage=True, concurrency=2,
                policy=pb.PolicySpec(policy="openai"), budget=budget))
            done = op
            for _ in range(60):  # the server caps one WaitOperation; a 2-core CI machine needs many
                done = await client.ops.WaitOperation(operations_pb2.WaitOperationRequest(
                    name=op.name, timeout=duration_pb2.Duration(seconds=60)), timeout=120)
                if done.done:
                    break
            assert done.done and not done.HasField("error"), done
            response = pb.BatchExplainFeaturesResponse()
            done.response.Unpack(response)
            explanations = [(await client.agent.GetExplanation(pb.GetExplanationRequest(name=n))).explanation
                            for n in response.explanations]
        state = runtime.llm.endpoint()
    assert state.structured_known and state.structured_floor == 1  # json_object with the schema
    assert state.gate.in_flight == 0 and state.gate.limit == 1
    for ex in explanations:
        assert not ex.HasField("error"), (ex.feature_id, ex.stop_reason, ex.error.message)
        assert ex.description and ex.hypotheses and ex.usage.llm_calls >= 3 and ex.usage.prompt_tokens > 0
        assert sum(h.is_control for h in ex.hypotheses) == 1
