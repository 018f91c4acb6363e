"""The LLM policy over real gRPC, with the LLM played by a fake OpenAI-compatible
server on a loopback socket: a well-behaved scientist, a broken one, a slow
recovery, and a spendthrift that the token budget must stop."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.server.lifecycle import channel_options
from tests.agent.conftest import SAE, AgentClient, with_llm
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.scientist import scientist, step

pytestmark = pytest.mark.asyncio(loop_scope="session")
OPENAI = pb.PolicySpec(policy="openai")


@pytest_asyncio.fixture(loop_scope="session")
async def llm_agent(agent_config: AgentConfig) -> AsyncIterator[Callable[..., Any]]:
    """Start an agent whose LLM is a fake driven by ``handler``."""
    fakes: list[FakeOpenAI] = []

    async def start(handler: Callable[[dict[str, Any]], str | Reply], fake_options: dict[str, Any] | None = None,
                    **llm: Any) -> tuple[AgentClient, FakeOpenAI]:
        fake = FakeOpenAI(handler, **(fake_options or {})).__enter__()
        fakes.append(fake)
        config = with_llm(agent_config, base_url=fake.base_url, model="fake-scientist", max_retries=0, **llm)
        ctx = running_agent_server(config)
        running, _ = await ctx.__aenter__()
        contexts.append(ctx)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options())
        channels.append(channel)
        return AgentClient(channel), fake

    contexts: list[Any] = []
    channels: list[grpc.aio.Channel] = []
    yield start
    for channel in channels:
        await channel.close()
    for ctx in contexts:
        await ctx.__aexit__(None, None, None)
    for fake in fakes:
        fake.__exit__(None, None, None)


async def explain(client: AgentClient, feature: int = 5, **kwargs: Any) -> list[pb.ExplainFeatureResponse]:
    request = pb.ExplainFeatureRequest(sae_id=SAE, feature_id=feature, policy=OPENAI, skip_triage=True, **kwargs)
    return [e async for e in client.agent.ExplainFeature(request)]


async def test_every_step_gets_its_own_compact_prompt(llm_agent: Any, token_features: dict[int, str]) -> None:
    client, fake = await llm_agent(partial(scientist, settle_after=2))
    feature = next(iter(token_features))
    ex = (await explain(client, feature, budget=pb.Budget(max_rounds=3)))[-1].explanation
    assert not ex.HasField("error"), ex.error.message
    # The conclusion's own text, then what the feature does (its logit lens; this server does not steer).
    assert ex.description.startswith("Fires on 'the'. What it does: its decoder direction promotes ")
    assert [lb.name for lb in ex.labels] == ["the"]
    assert all(h.status == pb.HYPOTHESIS_STATUS_CONFIRMED for h in ex.hypotheses)
    assert all([u.status for u in h.updates] == [pb.HYPOTHESIS_STATUS_PENDING, pb.HYPOTHESIS_STATUS_CONFIRMED]
               for h in ex.hypotheses)
    # Evidence carries the measured activation, not a number the model wrote.
    assert ex.evidence[0].activation == pytest.approx(ex.probes[0].max_activation)
    # 1 hypothesize + 2 rounds x (4 designs + 4 judgements) + 1 review + 1 conclusion; one probe batch per round.
    assert [step(b) for b in fake.requests].count("probes") == 8 and len(fake.requests) == 19
    assert ex.usage.llm_calls == 19 and ex.usage.prompt_tokens > 0
    assert sorted({p.round for p in ex.probes}) == [1, 2] and ex.rounds == 2
    for body in fake.requests:  # system + one user prompt: no chat history, ever
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
    # A hypothesis sees its own evidence and no one else's.
    design_h2 = [b["messages"][1]["content"] for b in fake.requests if "test H2" in b["messages"][1]["content"]]
    assert "Probe 2.0" in design_h2[1] and "Probe 1." not in design_h2[1] and "H1 [" not in design_h2[1]


async def test_malformed_answers_fail_the_feature_with_the_reason(
    llm_agent: Any, token_features: dict[int, str]
) -> None:
    client, fake = await llm_agent(lambda body: "The feature seems to be about cats, honestly.")
    events = await explain(client, next(iter(token_features)))
    ex = events[-1].explanation
    assert ex.error.code == grpc.StatusCode.ABORTED.value[0]
    assert "hypothesize" in ex.error.message and "valid" in ex.error.message
    assert ex.description == "" and not ex.labels  # nothing made up
    assert len(fake.requests) == 3 and ex.usage.llm_calls == 3  # re-asked, then gave up
    assert events[-2].state == pb.AGENT_STATE_FAILED
    # The failure is stored like any result.
    stored = await client.agent.GetExplanation(pb.GetExplanationRequest(name=ex.name))
    assert stored.explanation.error.message == ex.error.message


async def test_a_reask_quotes_the_validator_and_recovers(llm_agent: Any, token_features: dict[int, str]) -> None:
    answers = iter([json.dumps({"hypotheses": [{"text": "only one", "is_control": False}]})])

    def handler(body: dict[str, Any]) -> str:
        if step(body) == "hypotheses":
            return next(answers, None) or scientist(body)
        return scientist(body)

    client, fake = await llm_agent(handler)
    ex = (await explain(client, next(iter(token_features)), budget=pb.Budget(max_rounds=1)))[-1].explanation
    assert not ex.HasField("error"), ex.error.message
    retry = fake.requests[1]["messages"]
    assert len(retry) == 4 and "exactly 4 items" in retry[-1]["content"]


async def test_the_token_budget_stops_a_spendthrift(llm_agent: Any, token_features: dict[int, str]) -> None:
    def expensive(body: dict[str, Any]) -> Reply:
        return Reply(content=scientist(body) if step(body) != "verdict" else json.dumps(
            {"status": "PENDING", "reason": "need more", "refined_text": ""}), prompt_tokens=2500,
            completion_tokens=100)

    client, fake = await llm_agent(expensive)
    ex = (await explain(client, next(iter(token_features)), budget=pb.Budget(max_rounds=30, max_llm_tokens=20_000)))[
        -1].explanation
    assert not ex.HasField("error"), ex.error.message
    assert ex.stop_reason == "max_llm_tokens"
    spent = ex.usage.prompt_tokens + ex.usage.completion_tokens
    # Testing stops at 80% of the budget; calls in flight and the conclusion may add one step.
    assert spent <= 20_000 + 4 * 2600 and ex.description
    assert ex.rounds < 30


async def test_a_cached_run_replays_exactly_without_the_llm(llm_agent: Any, token_features: dict[int, str],
                                                            tmp_path: Any) -> None:
    feature = next(iter(token_features))
    client, fake = await llm_agent(scientist, cache_dir=tmp_path / "llm-cache")
    first = (await explain(client, feature, budget=pb.Budget(max_rounds=2)))[-1].explanation

    def unreachable(body: dict[str, Any]) -> Reply:
        raise AssertionError("a replay must not call the LLM")

    replay_client, replay_fake = await llm_agent(unreachable, cache_dir=tmp_path / "llm-cache")
    replay = (await explain(replay_client, feature, budget=pb.Budget(max_rounds=2)))[-1].explanation
    assert not replay.HasField("error") and not replay_fake.requests
    for field in ("description", "labels", "hypotheses", "evidence"):
        assert getattr(replay, field) == getattr(first, field)
    assert [(p.text, p.max_activation) for p in replay.probes] == [(p.text, p.max_activation) for p in first.probes]
    assert replay.usage.prompt_tokens == first.usage.prompt_tokens  # budgets replay identically too


async def test_the_wall_clock_budget_ends_a_slow_run(llm_agent: Any, token_features: dict[int, str]) -> None:
    client, _ = await llm_agent(lambda body: Reply(content=scientist(body, settle_after=99), delay_s=0.4))
    ex = (await explain(client, next(iter(token_features)), budget=pb.Budget(max_rounds=30, max_seconds=4)))[
        -1].explanation
    assert ex.elapsed_seconds < 4 + 1
    if ex.HasField("error"):  # the conclusion itself did not fit
        assert ex.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and ex.stop_reason == "max_seconds"
    else:
        assert ex.stop_reason == "max_seconds" and ex.description


async def test_calls_cut_off_by_the_time_budget_are_counted(llm_agent: Any, token_features: dict[int, str]) -> None:
    """The first answer is rejected (not JSON), the re-ask hangs past the wall-clock
    budget: both calls count in the explanation's usage, whatever the machine's speed."""
    answered = threading.Event()

    def handler(body: dict[str, Any]) -> Reply:
        if not answered.is_set():
            answered.set()
            return Reply(content="I think the feature is about words.", prompt_tokens=900, completion_tokens=9)
        return Reply(content="still thinking", delay_s=20)

    client, fake = await llm_agent(handler, prompt_usd_per_mtok=1.0)
    ex = (await explain(client, next(iter(token_features)), budget=pb.Budget(max_seconds=6)))[-1].explanation
    assert ex.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and ex.stop_reason == "max_seconds", ex.error
    assert len(fake.requests) == 2, "one rejected answer, one call in flight when the budget ended"
    assert ex.usage.llm_calls == 2
    assert ex.usage.completion_tokens == 9 and ex.usage.prompt_tokens > 900  # the cut-off call's prompt is estimated
    assert ex.usage.cost_usd == pytest.approx(ex.usage.prompt_tokens / 1e6)


async def test_a_llama_cpp_server_is_used_through_json_object_with_the_schema(
        llm_agent: Any, token_features: dict[int, str]) -> None:
    # llama.cpp's server answers json_schema with HTTP 500 and serves one request at a time.
    client, fake = await llm_agent(scientist, fake_options={"llama_cpp": True, "serial": True}, max_in_flight=1)
    ex = (await explain(client, next(iter(token_features)), budget=pb.Budget(max_rounds=1)))[-1].explanation
    assert not ex.HasField("error"), ex.error.message
    kinds = [b.get("response_format", {}).get("type") for b in fake.requests]
    assert kinds[0] == "json_schema" and kinds[1:] == ["json_object"] * (len(kinds) - 1)  # found out once
    assert fake.peak_in_flight == 1


async def test_an_unknown_model_fails_a_batch_fast_without_retries(
        llm_agent: Any, token_features: dict[int, str]) -> None:
    client, fake = await llm_agent(lambda body: Reply(status=404, error="The model `fake-scientist` does not exist"))
    features = list(token_features)[:3]
    op = await client.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
        sae_id=SAE, feature_ids=features, skip_triage=True, policy=OPENAI))
    done = await client.ops.WaitOperation(operations_pb2.WaitOperationRequest(
        name=op.name, timeout=duration_pb2.Duration(seconds=60)), timeout=90)
    response = pb.BatchExplainFeaturesResponse()
    done.response.Unpack(response)
    for name in response.explanations:
        ex = (await client.agent.GetExplanation(pb.GetExplanationRequest(name=name))).explanation
        assert ex.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], ex.error
        assert "check model 'fake-scientist'" in ex.error.message and ex.stop_reason == "llm_misconfigured"
    assert len(response.explanations) == 3
    assert len(fake.requests) == 1  # asked once, remembered for every feature; no feature retried


async def test_extra_controls_of_a_small_model_are_dropped_not_reasked(
        llm_agent: Any, token_features: dict[int, str]) -> None:
    def handler(body: dict[str, Any]) -> str:
        if step(body) == "hypotheses":
            return json.dumps({"hypotheses": [
                {"text": "Fires on the word 'the'.", "is_control": False},
                {"text": "Silent on numbers.", "is_control": True},
                {"text": "Silent on code.", "is_control": True},
                {"text": "Silent on names.", "is_control": True}]})
        return scientist(body)

    client, fake = await llm_agent(handler)
    ex = (await explain(client, next(iter(token_features)), budget=pb.Budget(max_rounds=1)))[-1].explanation
    assert not ex.HasField("error"), ex.error.message
    assert [(h.text, h.is_control) for h in ex.hypotheses] == [
        ("Fires on the word 'the'.", False), ("Silent on numbers.", True)]
    assert [step(b) for b in fake.requests].count("hypotheses") == 1


async def test_evidence_citing_a_probe_that_does_not_exist_is_dropped(
        llm_agent: Any, token_features: dict[int, str]) -> None:
    def handler(body: dict[str, Any]) -> str:
        if step(body) == "conclusion":
            return json.dumps({"description": "Fires on 'the'.", "labels": [{"name": "the", "description": "the"}],
                               "evidence": [{"probe_id": 207341985, "hypothesis_id": 1, "supports": True},
                                            {"probe_id": 1, "hypothesis_id": 1, "supports": True}]})
        return scientist(body)

    client, fake = await llm_agent(handler)
    ex = (await explain(client, next(iter(token_features)), budget=pb.Budget(max_rounds=1)))[-1].explanation
    assert not ex.HasField("error"), ex.error.message
    assert len(ex.evidence) == 1 and ex.evidence[0].activation == pytest.approx(ex.probes[0].max_activation)
    assert [step(b) for b in fake.requests].count("conclusion") == 1  # not re-asked for it
