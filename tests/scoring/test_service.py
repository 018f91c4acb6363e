"""The scoring service over real gRPC: a scoring server on a loopback port, talking
to the session's activation server, a FakeOpenAI LLM and (for CompareExplainers)
a scripted agent service."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from sagex.api.agent.v1 import agent_service_pb2 as agent_pb
from sagex.api.agent.v1 import agent_service_pb2_grpc as agent_grpc
from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.api.scoring.v1 import scoring_service_pb2_grpc as pb_grpc
from sagex.llm import LLMConfig
from sagex.scoring.config import ScoringConfig
from sagex.scoring.heldout import HeldoutSpec
from sagex.scoring.scorers.generative import GenerativeSettings
from sagex.scoring.server import running_scoring_server
from sagex.server.lifecycle import ServerOptions, channel_options
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.scoring import scripted
from tests.scoring.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")


def llm_handler(baseline: str) -> Callable[[dict[str, Any]], Reply]:
    """The single-pass baseline gets ``baseline``; scorer prompts get the literal reader."""
    generative, classifier = scripted.generative, scripted.classifier(logprobs=True)

    def handler(body: dict[str, Any]) -> Reply:
        system = body["messages"][0]["content"]
        if system.startswith("We study features"):
            return Reply(content=baseline)
        if "test texts" in system:
            return generative(body)
        return classifier(body)

    return handler


class ScriptedAgent(agent_grpc.AgentServiceServicer):
    """An agent service that explains each feature as its measured word."""

    def __init__(self, words: dict[int, str]) -> None:
        self.words = words

    async def ExplainFeature(self, request: agent_pb.ExplainFeatureRequest, context: Any) -> AsyncIterator[Any]:
        yield agent_pb.ExplainFeatureResponse(state=agent_pb.AGENT_STATE_TRIAGE)
        word = self.words.get(request.feature_id)
        ex = agent_pb.Explanation(sae_id=request.sae_id, feature_id=request.feature_id, policy="scripted")
        if word:
            ex.description = f'the word "{word}"'
        else:
            ex.triage_class = "dead"
        yield agent_pb.ExplainFeatureResponse(explanation=ex)


@pytest.fixture
def fake_llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(llm_handler('Explanation: the word "because"')) as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="session")
async def agent_address(token_features: dict[int, str]) -> AsyncIterator[str]:
    server = grpc.aio.server()
    agent_grpc.add_AgentServiceServicer_to_server(ScriptedAgent(token_features), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


class Client:
    def __init__(self, channel: grpc.aio.Channel, address: str) -> None:
        self.scoring = pb_grpc.ScoringServiceStub(channel)
        self.ops = operations_pb2_grpc.OperationsStub(channel)
        self.address = address


@pytest_asyncio.fixture(loop_scope="session")
async def client(server: Any, fake_llm: FakeOpenAI, agent_address: str, tmp_path: Path) -> AsyncIterator[Client]:
    config = ScoringConfig(
        activation=(f"127.0.0.1:{server.port}",), agent=agent_address, database=tmp_path / "scoring.sqlite3",
        llm=LLMConfig(base_url=fake_llm.base_url, model="fake-model", max_retries=0),
        generative=GenerativeSettings(n_texts=8),
        server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0),
    )
    async with running_scoring_server(config) as (running, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options()) as channel:
            yield Client(channel, f"127.0.0.1:{running.port}")


def all_feature(token_features: dict[int, str]) -> int:
    return next(f for f, w in token_features.items() if w == "all")


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    return {}


def wait(name: str, seconds: float) -> operations_pb2.WaitOperationRequest:
    return operations_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=int(seconds)))


async def test_score_explanation(client: Client, token_features: dict[int, str]) -> None:
    feature = all_feature(token_features)
    request = pb.ScoreExplanationRequest(
        explanation=pb.ExplanationToScore(sae_id=SAE, feature_id=feature, text='the word "all"'),
        scorers=["embedding", "detection", "generative", "predictive"], seed=3)
    response = await client.scoring.ScoreExplanation(request, timeout=300)
    assert response.explanation == request.explanation
    assert [r.scorer for r in response.results] == ["embedding", "detection", "generative", "predictive"]
    by_name = {r.scorer: r for r in response.results}
    for name in ("embedding", "detection", "generative"):
        result = by_name[name]
        assert not result.HasField("error"), result.error
        for m in result.metrics:
            assert m.n > 0 and m.ci.level == 0.95 and m.ci.lower <= m.value <= m.ci.upper
    assert {m.name: m.value for m in by_name["detection"].metrics}["balanced_accuracy"] >= 0.8
    assert by_name["detection"].llm_prompt_tokens > 0 and by_name["embedding"].llm_prompt_tokens == 0
    assert by_name["detection"].llm_calls > 0 and by_name["embedding"].llm_calls == 0
    assert float(by_name["generative"].details["tau"]) > 0  # what the numbers rest on travels with them
    # The fake answers the simulator's prompt like a classifier: a clear error, not a failed RPC.
    predictive = by_name["predictive"]
    assert predictive.error.code == code_pb2.FAILED_PRECONDITION and predictive.error.message
    assert not predictive.metrics


async def test_invalid_requests(client: Client, token_features: dict[int, str]) -> None:
    feature = next(iter(token_features))
    cases = [
        (pb.ScoreExplanationRequest(explanation=pb.ExplanationToScore(sae_id=SAE, feature_id=feature, text="x"),
                                    scorers=["simulation"]), grpc.StatusCode.INVALID_ARGUMENT, "scorers"),
        (pb.ScoreExplanationRequest(explanation=pb.ExplanationToScore(sae_id=SAE, feature_id=feature, text=" ")),
         grpc.StatusCode.INVALID_ARGUMENT, "explanation.text"),
        (pb.ScoreExplanationRequest(explanation=pb.ExplanationToScore(sae_id=SAE, feature_id=feature,
                                                                      text="x" * 1001)),
         grpc.StatusCode.INVALID_ARGUMENT, "explanation.text"),
        (pb.ScoreExplanationRequest(explanation=pb.ExplanationToScore(sae_id=SAE, feature_id=10**6, text="x")),
         grpc.StatusCode.INVALID_ARGUMENT, "explanation.feature_id"),
        (pb.ScoreExplanationRequest(explanation=pb.ExplanationToScore(sae_id="nope", feature_id=1, text="x")),
         grpc.StatusCode.NOT_FOUND, None),
    ]
    for request, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.scoring.ScoreExplanation(request, timeout=30)
        assert caught.value.code() == code, caught.value.details()
        if field:
            assert field in violations(caught.value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.scoring.CompareExplainers(pb.CompareExplainersRequest(
            sae_id=SAE, feature_ids=[feature], explainers=["sage", "oracle"]), timeout=30)
    assert "explainers" in violations(caught.value)


async def test_batch_is_a_long_running_operation(client: Client, token_features: dict[int, str]) -> None:
    features = list(token_features)[:2]
    request = pb.BatchScoreExplanationsRequest(
        explanations=[pb.ExplanationToScore(sae_id=SAE, feature_id=f, text=f'the word "{token_features[f]}"')
                      for f in features], scorers=["embedding"], seed=1, request_id="batch-1")
    op = await client.scoring.BatchScoreExplanations(request, timeout=30)
    again = await client.scoring.BatchScoreExplanations(request, timeout=30)
    assert again.name == op.name  # idempotent by request_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.scoring.BatchScoreExplanations(replace_seed(request, 2), timeout=30)
    assert "request_id" in violations(caught.value)

    done = await client.ops.WaitOperation(wait(op.name, 240), timeout=250)
    assert done.done and not done.HasField("error"), done.error
    # Out-of-range Durations (found by fuzzing: they overflowed to INTERNAL) are a wait capped, or refused.
    huge = operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=2**62))
    assert (await client.ops.WaitOperation(huge, timeout=10)).done
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        negative = operations_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=-2**62))
        await client.ops.WaitOperation(negative, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    meta, response = pb.BatchScoreExplanationsMetadata(), pb.BatchScoreExplanationsResponse()
    done.metadata.Unpack(meta)
    done.response.Unpack(response)
    assert (meta.total, meta.done) == (2, 2)
    assert [r.explanation.feature_id for r in response.results] == features
    assert all([res.scorer for res in r.results] == ["embedding"] for r in response.results)
    assert meta.failed == sum(res.HasField("error") for r in response.results for res in r.results)
    listed = await client.ops.ListOperations(operations_pb2.ListOperationsRequest(), timeout=10)
    assert op.name in [o.name for o in listed.operations]
    await client.ops.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def replace_seed(request: pb.BatchScoreExplanationsRequest, seed: int) -> pb.BatchScoreExplanationsRequest:
    copy = pb.BatchScoreExplanationsRequest()
    copy.CopyFrom(request)
    copy.seed = seed
    return copy


async def test_compare_explainers_on_the_same_held_out_data(client: Client, token_features: dict[int, str],
                                                            dead_feature: int, fake_llm: FakeOpenAI) -> None:
    features = [*list(token_features)[:3], dead_feature]
    op = await client.scoring.CompareExplainers(pb.CompareExplainersRequest(
        sae_id=SAE, feature_ids=features, explainers=["sage", "single_pass"], scorers=["detection"], seed=0,
        request_id="compare-1"), timeout=30)
    done = await client.ops.WaitOperation(wait(op.name, 300), timeout=310)
    assert done.done and not done.HasField("error"), done.error
    meta, response = pb.CompareExplainersMetadata(), pb.CompareExplainersResponse()
    done.metadata.Unpack(meta)
    done.response.Unpack(response)
    assert (meta.total, meta.done) == (4, 4)
    summaries = {s.explainer: {m.name: m for m in s.metrics} for s in response.summaries}
    key = "detection.balanced_accuracy"
    sage, single = summaries["sage"][key], summaries["single_pass"][key]
    # The dead feature has no explanation from either: it is left out of n, not scored as 0.
    assert sage.n == single.n == 3 and sage.value > single.value
    diff = next(d for d in response.differences if d.metric == key)
    assert (diff.explainer_a, diff.explainer_b) == ("sage", "single_pass")
    assert diff.difference.n == 3 and diff.wins == 3 and diff.losses == 0
    assert math.isclose(diff.difference.value, sage.value - single.value, abs_tol=1e-9)
    assert diff.difference.ci.lower <= diff.difference.value <= diff.difference.ci.upper
    assert 0 < diff.p_value <= 1
    # Every left-out feature is reported with its reason (flaw 21), not only logged.
    skipped = {(s.explainer, s.feature_id) for s in response.skipped}
    assert {("sage", dead_feature), ("single_pass", dead_feature)} <= skipped
    assert all(s.reason for s in response.skipped)
    # The baseline saw the exemplar split once per live feature, in one prompt each.
    baseline_prompts = [r for r in fake_llm.requests if r["messages"][0]["content"].startswith("We study features")]
    assert len(baseline_prompts) == 3


async def test_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "sage.toml"
    path.write_text(
        '[scoring]\nactivation = "10.0.0.1:50051"\nagent = "10.0.0.2:50052"\ndefault_scorers = ["embedding"]\n'
        'database = "ops/scoring.sqlite3"\nretention_hours = 24\n'
        '[scoring.llm]\nmodel = "judge"\ncache_dir = "cache"\n'
        '[scoring.heldout]\nper_band = 4\n'
        '[scoring.detection.classifier]\nexamples_per_prompt = 10\n'
        '[scoring.server]\nport = 6000\n')
    config = ScoringConfig.from_toml(path)
    assert config.activation == ("10.0.0.1:50051",) and config.agent == "10.0.0.2:50052"
    assert config.llm.model == "judge" and config.llm.cache_dir == tmp_path / "cache"
    assert config.heldout == HeldoutSpec(per_band=4) and config.detection.classifier.examples_per_prompt == 10
    assert config.server.port == 6000 and config.default_scorers == ("embedding",)
    assert config.database_path() == tmp_path / "ops" / "scoring.sqlite3" and config.retention_hours == 24
    path.write_text("[scoring.heldout]\nper_bands = 4\n")
    with pytest.raises(ValueError, match=r"unknown settings \['per_bands'\]"):
        ScoringConfig.from_toml(path)
    with pytest.raises(ValueError, match="default_scorers"):
        replace(config, default_scorers=("simulation",))
    with pytest.raises(ValueError, match="retention_hours"):
        replace(config, retention_hours=0)
