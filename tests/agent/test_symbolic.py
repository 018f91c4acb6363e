"""The symbolic policy and auto routing end to end over real gRPC against the
embedded model; the LLM (for auto) is a fake OpenAI server on a loopback socket."""

from __future__ import annotations

import re
from dataclasses import replace

import grpc
import pytest

from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.server.lifecycle import channel_options
from tests.agent.conftest import SAE, AgentClient, with_llm
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scientist import scientist

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_symbolic_labels_read_as_concepts(agent: AgentClient, token_features: dict[int, str]) -> None:
    feature, token = next(iter(token_features.items()))
    events = [e async for e in agent.agent.ExplainFeature(pb.ExplainFeatureRequest(
        sae_id=SAE, feature_id=feature, skip_triage=True, policy=pb.PolicySpec(policy="symbolic")))]
    ex = events[-1].explanation
    assert not ex.HasField("error") and ex.policy == "symbolic" and ex.usage.llm_calls == 0
    assert len(ex.hypotheses) == 4 and sum(h.is_control for h in ex.hypotheses) == 1
    assert ex.probes and all(p.fire_threshold > 0 for p in ex.probes)
    assert ex.labels
    for label in ex.labels:
        assert "\n" not in label.name and len(label.name) <= 80 and label.description.startswith("Fires on") \
            or label.name.startswith("unexplained")
        assert 0 < label.confidence <= 1 or label.name.startswith("unexplained")
        assert f"Confidence {label.confidence:.2f}" in label.description or label.name.startswith("unexplained")
    sentences = [s.strip() for s in re.split(r"(?<=\.) ", ex.description) if s.strip()]
    assert len(sentences) == len(set(sentences))  # no sentence said twice


async def test_auto_keeps_a_good_symbolic_label_and_spends_no_llm_tokens(
        agent_config: AgentConfig, token_features: dict[int, str]) -> None:
    feature = next(iter(token_features))
    with FakeOpenAI(scientist) as fake:
        config = replace(with_llm(agent_config, base_url=fake.base_url, model="fake-scientist", max_retries=0),
                         auto_threshold=0.0)
        async with running_agent_server(config) as (running, _):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options()) as ch:
                client = AgentClient(ch)
                events = [e async for e in client.agent.ExplainFeature(pb.ExplainFeatureRequest(
                    sae_id=SAE, feature_id=feature, skip_triage=True, policy=pb.PolicySpec(policy="auto")))]
    ex = events[-1].explanation
    assert not ex.HasField("error") and ex.policy == "auto:symbolic"
    assert ex.usage.llm_calls == 0 and not fake.requests


async def test_auto_sends_an_unexplained_feature_to_the_llm_with_the_symbolic_findings(
        agent_config: AgentConfig, token_features: dict[int, str]) -> None:
    feature = next(iter(token_features))
    with FakeOpenAI(scientist) as fake:
        config = replace(with_llm(agent_config, base_url=fake.base_url, model="fake-scientist", max_retries=0),
                         auto_threshold=1.0)
        async with running_agent_server(config) as (running, _):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options()) as ch:
                client = AgentClient(ch)
                events = [e async for e in client.agent.ExplainFeature(pb.ExplainFeatureRequest(
                    sae_id=SAE, feature_id=feature, skip_triage=True, policy=pb.PolicySpec(policy="auto")))]
    ex = events[-1].explanation
    assert not ex.HasField("error")
    if ex.policy == "auto:symbolic":  # its label predicted the fresh windows perfectly (F1 = 1.0)
        assert not fake.requests
        return
    assert ex.policy == "auto:openai" and ex.usage.llm_calls > 0 and ex.usage.prompt_tokens > 0
    first = fake.requests[0]["messages"][-1]["content"]
    assert "A symbolic explainer" in first and "Its hypotheses:" in first


async def test_triage_probes_class_siblings_before_a_single_token_label(
        agent: AgentClient, token_features: dict[int, str]) -> None:
    """A token label from triage stands only when other members of the token's class
    (swapped into the exemplar's own context) stayed silent."""
    for feature in list(token_features)[:3]:
        events = [e async for e in agent.agent.ExplainFeature(pb.ExplainFeatureRequest(
            sae_id=SAE, feature_id=feature, policy=pb.PolicySpec(policy="symbolic")))]
        ex = events[-1].explanation
        assert not ex.HasField("error")
        siblings = [p for p in ex.probes if p.hypothesis_id == 0 and "another member of" in p.rationale]
        if ex.triage_class == "single_token":
            assert siblings and all(p.expected == pb.EXPECTED_OUTCOME_SILENT and p.as_expected for p in siblings)
            assert all(p.as_expected for p in ex.probes)
        elif siblings:  # the claim was checked and failed: the loop ran instead
            assert ex.hypotheses and any(not p.as_expected for p in ex.probes if p.hypothesis_id == 0)
