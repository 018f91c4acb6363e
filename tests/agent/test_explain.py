"""The heuristic policy end to end over real gRPC against the embedded model."""

from __future__ import annotations

from collections import Counter

import grpc
import numpy as np
import pytest

from sagex.api.agent.v1 import agent_service_pb2 as pb
from tests.agent.conftest import SAE, AgentClient

pytestmark = pytest.mark.asyncio(loop_scope="session")
HEURISTIC = pb.PolicySpec(policy="heuristic")  # the default is the symbolic policy (tests/agent/test_symbolic.py)


async def test_explain_streams_the_run_and_stores_it(agent: AgentClient, token_features: dict[int, str]) -> None:
    feature, token = next(iter(token_features.items()))
    events = [e async for e in agent.agent.ExplainFeature(pb.ExplainFeatureRequest(
        sae_id=SAE, feature_id=feature, skip_triage=True, policy=HEURISTIC))]
    kinds = [e.WhichOneof("event") for e in events]
    states = [e.state for e in events if e.HasField("state")]
    assert states[0] == pb.AGENT_STATE_TRIAGE and states[-1] == pb.AGENT_STATE_DONE
    assert pb.AGENT_STATE_TESTING in states and pb.AGENT_STATE_CONCLUDING in states
    assert kinds[-1] == "explanation" and kinds.count("explanation") == 1
    ex = events[-1].explanation

    assert not ex.HasField("error") and ex.stop_reason in ("converged", "max_rounds", "max_probes")
    assert len(ex.hypotheses) == 4 and sum(h.is_control for h in ex.hypotheses) == 1
    assert all(h.status != pb.HYPOTHESIS_STATUS_UNSPECIFIED and h.updates for h in ex.hypotheses)
    assert token in (ex.description + " ".join(label.name for label in ex.labels)).lower()
    # Every probe carries its measured trace, its expectation and whether it matched.
    assert ex.probes and 1 <= ex.rounds <= 3
    for p in ex.probes:
        values = np.frombuffer(p.trace.values, "<f4")
        assert len(values) == len(p.tokens.ids) == len(p.tokens.texts)
        special = set(p.tokens.special_positions)
        content = [v for i, v in enumerate(values) if i not in special and i > 0]  # never position 0
        assert p.max_activation == pytest.approx(max(content, default=0.0), abs=1e-5)
        fired = p.max_activation >= p.fire_threshold and p.max_activation > 0
        assert p.as_expected == (fired == (p.expected == pb.EXPECTED_OUTCOME_FIRES))
    assert p.fire_threshold == pytest.approx(0.2 * ex.max_activation, rel=1e-5)
    # The streamed probes are the stored ones; the stored explanation is the streamed one.
    assert [e.probe.id for e in events if e.HasField("probe")] == [p.id for p in ex.probes]
    stored = await agent.agent.GetExplanation(pb.GetExplanationRequest(name=ex.name))
    assert stored.explanation == ex


async def test_batch_job_names_the_tokens_of_token_level_features(agent: AgentClient,
                                                                  token_features: dict[int, str]) -> None:
    features = dict(list(token_features.items())[:4])
    op = await agent.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
        sae_id=SAE, feature_ids=list(features), concurrency=4, request_id="token-features", policy=HEURISTIC))
    done = await agent.ops.WaitOperation(_wait(op.name, 300))
    assert done.done and not done.HasField("error"), done.error
    meta = pb.BatchExplainFeaturesMetadata()
    done.metadata.Unpack(meta)
    assert (meta.total, meta.done, meta.failed) == (4, 4, 0)
    response = pb.BatchExplainFeaturesResponse()
    done.response.Unpack(response)
    for (feature, token), name in zip(features.items(), response.explanations, strict=True):
        ex = (await agent.agent.GetExplanation(pb.GetExplanationRequest(name=name))).explanation
        assert ex.feature_id == feature
        text = (ex.description + " " + " ".join(lb.name + " " + lb.description for lb in ex.labels)).lower()
        assert token in text, f"feature {feature} peaks on {token!r}, but the explanation says: {ex.description}"
        assert ex.labels, ex.description
    # The same key returns the same operation, not a second job.
    again = await agent.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
        sae_id=SAE, feature_ids=list(features), concurrency=4, request_id="token-features", policy=HEURISTIC))
    assert again.name == op.name and again.done
    listed = await agent.agent.ListExplanations(pb.ListExplanationsRequest(sae_id=SAE, feature_ids=list(features)))
    assert sorted(e.feature_id for e in listed.explanations) == sorted(features)


def _wait(name: str, seconds: int):  # type: ignore[no-untyped-def]
    from google.longrunning import operations_pb2
    from google.protobuf import duration_pb2

    return operations_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=seconds))


async def test_budgets_bound_rounds_and_probes(agent: AgentClient, token_features: dict[int, str]) -> None:
    feature = next(iter(token_features))
    events = [e async for e in agent.agent.ExplainFeature(pb.ExplainFeatureRequest(
        sae_id=SAE, feature_id=feature, skip_triage=True,
        budget=pb.Budget(max_rounds=1, max_probes_per_hypothesis=1)))]
    ex = events[-1].explanation
    assert ex.rounds == 1 and ex.stop_reason in ("max_rounds", "max_probes")
    per_hypothesis = Counter(p.hypothesis_id for p in ex.probes)
    assert per_hypothesis and max(per_hypothesis.values()) == 1


@pytest.mark.parametrize(("request_kwargs", "code", "field"), [
    ({"sae_id": "no-such-sae", "feature_id": 1}, grpc.StatusCode.NOT_FOUND, ""),
    ({"sae_id": "", "feature_id": 1}, grpc.StatusCode.INVALID_ARGUMENT, "sae_id"),
    ({"sae_id": SAE, "feature_id": 10**6}, grpc.StatusCode.INVALID_ARGUMENT, "feature_id"),
    ({"sae_id": SAE, "feature_id": 1, "policy": pb.PolicySpec(policy="magic")}, grpc.StatusCode.INVALID_ARGUMENT,
     "policy.policy"),
    ({"sae_id": SAE, "feature_id": 1, "policy": pb.PolicySpec(policy="openai")}, grpc.StatusCode.INVALID_ARGUMENT,
     "policy.model"),
    ({"sae_id": SAE, "feature_id": 1, "policy": pb.PolicySpec(num_hypotheses=2)}, grpc.StatusCode.INVALID_ARGUMENT,
     "policy.num_hypotheses"),
    ({"sae_id": SAE, "feature_id": 1, "budget": pb.Budget(max_rounds=99)}, grpc.StatusCode.INVALID_ARGUMENT,
     "budget.max_rounds"),
])
async def test_bad_explain_requests_say_what_to_fix(agent: AgentClient, request_kwargs: dict, code: grpc.StatusCode,
                                                    field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in agent.agent.ExplainFeature(pb.ExplainFeatureRequest(**request_kwargs)):
            pass
    assert err.value.code() == code
    if code == grpc.StatusCode.NOT_FOUND:
        assert SAE in err.value.details()  # names what is served
    else:
        assert err.value.details().startswith(field)


@pytest.mark.parametrize(("request_kwargs", "field"), [
    ({"feature_ids": []}, "feature_ids"),
    ({"feature_ids": [1, 2, 1]}, "feature_ids"),
    ({"feature_ids": [1], "concurrency": 65}, "concurrency"),
    ({"feature_ids": [1], "request_id": "x" * 200}, "request_id"),
])
async def test_bad_batch_requests_say_what_to_fix(agent: AgentClient, request_kwargs: dict, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await agent.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(sae_id=SAE, **request_kwargs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)


async def test_an_unreachable_activation_service_is_unavailable_not_internal(agent_config: object) -> None:
    from dataclasses import replace

    from sagex.agent.server import running_agent_server
    from sagex.server.lifecycle import channel_options
    from tests.agent.test_activation_client import dead_address

    config = replace(agent_config, activation=(dead_address(),), activation_timeout_s=2)  # type: ignore[type-var]
    async with running_agent_server(config) as (running, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options()) as channel:
            client = AgentClient(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(sae_id=SAE, feature_ids=[1]))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no activation replica answered" in err.value.details()
