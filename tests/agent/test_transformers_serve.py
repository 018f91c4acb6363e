"""The LLM policy against a real OpenAI-compatible server: transformers serve with
SmolLM2-135M-Instruct on CPU. Its answers are weak and messy; the loop must stay
within its budgets, handle what it gets, and finish."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.server.lifecycle import channel_options
from tests.agent.conftest import SAE, AgentClient, with_llm
from tests.fakes.transformers_server import TransformersServe

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_weak_real_model_finishes_within_budget(
    agent_config: AgentConfig, transformers_serve: TransformersServe, token_features: dict[int, str]
) -> None:
    # Independent of the machine's speed: the LLM client waits longer than the feature's
    # wall-clock budget, so a slow answer ends the feature by that budget (never by a client
    # timeout, which the job would retry), and every call made until then is counted.
    config = with_llm(replace(agent_config, default_policy="heuristic"), base_url=transformers_serve.base_url,
                      model=transformers_serve.model, max_output_tokens=96, timeout_s=600, max_retries=0)
    budget = pb.Budget(max_rounds=1, max_llm_tokens=6000, max_seconds=120)
    async with running_agent_server(config) as (running, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options()) as channel:
            client = AgentClient(channel)
            op = await client.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
                sae_id=SAE, feature_ids=[next(iter(token_features))], skip_triage=True,
                policy=pb.PolicySpec(policy="openai"), budget=budget))
            done = await client.ops.WaitOperation(operations_pb2.WaitOperationRequest(
                name=op.name, timeout=duration_pb2.Duration(seconds=290)), timeout=300)
            assert done.done and not done.HasField("error"), done  # the job finishes, whatever the model says
            response = pb.BatchExplainFeaturesResponse()
            done.response.Unpack(response)
            request = pb.GetExplanationRequest(name=response.explanations[0])
            ex = (await client.agent.GetExplanation(request)).explanation
    # Every call counts, also those rejected or still in flight when the wall clock ends the
    # feature (a slow or busy machine): at least the first call was made in any case.
    assert ex.usage.llm_calls >= 1 and ex.usage.prompt_tokens > 0
    assert ex.elapsed_seconds < 120 + 10 and ex.rounds <= 1  # the budget, plus the time to stop
    # Testing stops at 80% of the tokens; calls in flight and the conclusion may add one step each.
    assert ex.usage.prompt_tokens + ex.usage.completion_tokens <= 6000 + 4 * 1500
    if ex.HasField("error"):
        # The usual outcome with a 135M model: no valid JSON; on a slower machine the wall-clock
        # budget may end it first. Either way it is said plainly and nothing is made up.
        outcomes = {grpc.StatusCode.ABORTED.value[0]: "valid answer",
                    grpc.StatusCode.DEADLINE_EXCEEDED.value[0]: "wall-clock budget"}
        assert outcomes.get(ex.error.code, "?") in ex.error.message, ex.error
        assert not ex.description and not ex.labels
    else:
        assert ex.description and ex.stop_reason
