"""The single-pass baseline explainer on real exemplar-split windows, with a fake
LLM, and a smoke run of it and the generative scorer against transformers serve."""

from __future__ import annotations

import grpc
import pytest

from sagex.llm import LLMBackend, LLMConfig, MalformedAnswer
from sagex.remote.activation import ActivationClient
from sagex.scoring.baseline import BaselineSettings, SinglePassExplainer, parse_explanation
from sagex.scoring.heldout import FeatureData, HeldoutSpec
from sagex.scoring.scorers import ScoringInput, Toolkit, build_scorer, run_scorer
from sagex.scoring.scorers.generative import GenerativeSettings
from tests.fakes.openai_server import FakeOpenAI, Reply, scripted
from tests.fakes.transformers_server import TransformersServe
from tests.scoring.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")



async def test_parse_explanation() -> None:
    assert parse_explanation('\n  Explanation: "the word all"\nmore', 100) == "the word all"
    assert parse_explanation("the main thing this neuron does is find quantifiers", 100) == "quantifiers"
    assert parse_explanation("x" * 50, 10) == "x" * 10
    assert parse_explanation('**Answer:** the word "all"', 100) == 'the word "all"'
    assert parse_explanation("'quoted phrase'", 100) == "quoted phrase"
    with pytest.raises(ValueError):
        parse_explanation(" \n \"\" \n", 100)


async def test_one_prompt_with_token_activation_pairs(activation: ActivationClient,
                                                      token_features: dict[int, str]) -> None:
    feature, word = next(iter(token_features.items()))
    reference = await FeatureData(activation, SAE, feature, HeldoutSpec(), seed=0).reference()
    with FakeOpenAI(scripted(f'Explanation: "the word {word}"')) as fake:
        async with LLMBackend(LLMConfig(base_url=fake.base_url, model="m", max_retries=0)) as llm:
            result = await SinglePassExplainer(llm).explain(reference.top)
    assert result.text == f"the word {word}" and result.windows_shown == len(reference.top)
    assert result.usage.calls == 1 and len(fake.requests) == 1
    shown = fake.requests[0]["messages"][1]["content"]
    assert shown.count("<start>") == 2 * len(reference.top)
    # The strongest window's peak token carries 10 on the 0-10 scale.
    top = reference.top[0]
    assert f"{top.peak_token}\t10" in shown.replace("\\n", "\n")


async def test_no_phrase_after_the_re_ask_is_malformed(activation: ActivationClient,
                                                       token_features: dict[int, str]) -> None:
    reference = await FeatureData(activation, SAE, next(iter(token_features)), HeldoutSpec(), seed=0).reference()
    with FakeOpenAI(scripted(Reply(content="  "), Reply(content='""'))) as fake:
        async with LLMBackend(LLMConfig(base_url=fake.base_url, model="m", max_retries=0)) as llm:
            with pytest.raises(MalformedAnswer) as caught:
                await SinglePassExplainer(llm, BaselineSettings(attempts=2)).explain(reference.top)
    assert caught.value.usage.calls == 2 and len(fake.requests) == 2


async def test_smoke_against_transformers_serve(transformers_serve: TransformersServe, activation: ActivationClient,
                                                token_features: dict[int, str]) -> None:
    """SmolLM2-135M is far too small to follow these prompts; what matters is that a
    real endpoint without logprobs yields an explanation or metrics, or a clear
    error status, and never an exception."""
    feature = next(iter(token_features))
    config = LLMConfig(base_url=transformers_serve.base_url, model=transformers_serve.model, timeout_s=120,
                       max_retries=0)
    data = FeatureData(activation, SAE, feature, HeldoutSpec(), seed=0)
    async with LLMBackend(config) as llm:
        try:
            baseline = await SinglePassExplainer(llm, BaselineSettings(top_k=3, max_tokens=12)).explain(
                (await data.reference()).top)
        except MalformedAnswer as e:
            assert e.usage.calls >= 1
            explanation = "the word all"
        else:
            assert baseline.text and len(baseline.text) <= 300 and baseline.usage.completion_tokens <= 24
            explanation = baseline.text
        scorer = build_scorer("generative", Toolkit(activation, llm=llm),
                              GenerativeSettings(n_texts=2, attempts=1, max_tokens=24))
        result = await run_scorer(scorer, ScoringInput(explanation, data))
    if result.ok:
        assert result.metric("success_rate").n >= 2
    else:
        assert result.error is not None and result.error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "no usable answer" in result.error.message
    assert result.usage.calls == 1 and result.usage.completion_tokens <= 24
