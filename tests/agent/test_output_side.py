"""Output-side evidence in the agent, over real gRPC against the embedded model: the
feature view carries the logit lens and prompts show it; the final explanation says
what the feature does, with a steering probe when the activation service steers."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from sagex.agent.budget import Budget
from sagex.agent.config import AgentConfig
from sagex.agent.explainer import Explainer, RunSpec
from sagex.agent.policies.heuristic import HeuristicPolicy
from sagex.agent.policies.llm import LLMPolicy
from sagex.agent.state import RunState
from sagex.agent.steering import judge, lens_words, run_probe
from sagex.llm import LLMBackend, LLMConfig
from sagex.remote.activation import ActivationClient
from tests.agent.conftest import SAE
from tests.fakes.openai_server import FakeOpenAI, Reply

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _spec(feature: int) -> RunSpec:
    return RunSpec(SAE, feature, "heuristic", "", Budget(max_rounds=2, max_probes_per_hypothesis=4, max_seconds=300), 4,
                   skip_triage=True)


async def _explain(config: AgentConfig, port: int, feature: int) -> Any:
    client = ActivationClient([f"127.0.0.1:{port}"])
    try:
        explainer = Explainer(replace(config, activation=(f"127.0.0.1:{port}",)), client, lambda _: HeuristicPolicy())
        return await explainer.explain(_spec(feature)), await client.effects(SAE, [feature], 20)
    finally:
        await client.close()


async def test_without_steering_the_explanation_carries_the_logit_lens(
        agent_config: AgentConfig, server: Any, token_features: dict[int, str]) -> None:
    feature = next(iter(token_features))
    outcome, lens = await _explain(agent_config, server.port, feature)
    assert not outcome.failed, outcome.error
    assert outcome.state.view.lens == lens[feature]
    words = lens_words(lens[feature], k=6)
    text = outcome.conclusion.description
    assert "What it does: its decoder direction promotes " + ", ".join(repr(w) for w in words) in text
    assert "Steering test" not in text
    assert not any(e.source.startswith("steered ") for e in outcome.conclusion.evidence)


async def test_with_steering_the_heuristic_tests_the_lens_by_steering(
        agent_config: AgentConfig, steer_server: Any, token_features: dict[int, str]) -> None:
    _, _, port = steer_server
    feature = next(iter(token_features))
    outcome, lens = await _explain(agent_config, port, feature)
    assert not outcome.failed, outcome.error
    text = outcome.conclusion.description
    assert "Steering test (logit lens: amplifying it makes the model write tokens such as" in text
    steered = [e for e in outcome.conclusion.evidence if e.source.startswith("steered ")]
    assert len(steered) == 5 and all(e.activation > 0 for e in steered)  # activation: the KL of that prompt
    hits = sum(e.supports for e in steered)
    assert f"appeared in {hits}/5 steered" in text
    verdict = re.search(r"\) (not confirmed|confirmed): at KL ([0-9.]+)", text)
    assert verdict is not None and abs(float(verdict.group(2)) - 1.0) <= 0.1
    unsteered = int(re.search(r"steered vs (\d)/5 unsteered", text).group(1))  # type: ignore[union-attr]
    assert (verdict.group(1) == "confirmed") == (hits > unsteered)


async def test_openai_policy_predicts_an_effect_from_the_lens(
        agent_config: AgentConfig, steer_server: Any, token_features: dict[int, str]) -> None:
    _, _, port = steer_server
    feature = next(iter(token_features))
    client = ActivationClient([f"127.0.0.1:{port}"])
    prompts: list[str] = []

    def handler(body: dict[str, Any]) -> Reply:
        prompts.append(body["messages"][-1]["content"])
        return Reply(content=json.dumps({"effect": "the model writes numbers", "tokens": ["The", "one", "two", "3x"]}))

    try:
        explainer = Explainer(agent_config, client, lambda _: HeuristicPolicy())
        state = RunState(await explainer.view(SAE, feature))
        assert state.view.lens is not None
        with FakeOpenAI(handler) as fake:
            async with LLMBackend(LLMConfig(base_url=fake.base_url, model="fake-model", max_retries=0)) as llm:
                prediction = await LLMPolicy(llm, "fake-model", Budget()).predict_steering(state)
        assert prediction is not None and prediction.tokens == ("the", "one", "two")  # "3x" is not a word
        assert repr(state.view.lens.promoted[0][0]) in prompts[0], "the prompt shows the logit lens"
        probe = await run_probe(client, SAE, feature, prediction, target_kl=1.0, max_new_tokens=8)
        assert not isinstance(probe, str)
        assert probe == judge(prediction, probe.outcome) and probe.n == 5
        assert abs(probe.outcome.mean_kl - 1.0) <= 0.1
    finally:
        await client.close()
