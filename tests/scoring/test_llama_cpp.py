"""The single-pass baseline and the LLM scorers end to end against llama.cpp's real
server (make llm-setup) with SmolLM2-135M-Instruct: the baseline writes an
explanation; the generative scorer asks through the grammar-enforced schema and the
predictive scorer with logprobs. A 135M model's texts and predictions are mostly
unusable (measured: generative "matching must be a list" after 3 attempts, 0 of 155
tokens predicted): what must hold is that each scorer ends in metrics or in the
clear FAILED_PRECONDITION that says the model's answers were unusable, never in an
unavailable endpoint or an exception."""

from __future__ import annotations

import grpc
import pytest

from sagex.llm import LLMBackend, LLMConfig
from sagex.llm.local import LlamaServer
from sagex.remote.activation import ActivationClient
from sagex.scoring.baseline import BaselineSettings, SinglePassExplainer
from sagex.scoring.heldout import FeatureData, HeldoutSpec
from sagex.scoring.scorers import ScoringInput, Toolkit, build_scorer, run_scorer
from sagex.scoring.scorers.generative import GenerativeSettings
from sagex.scoring.scorers.predictive import PredictiveSettings
from tests.scoring.conftest import SAE

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


async def test_baseline_then_generative_and_predictive_scores(
    llama_server: LlamaServer, activation: ActivationClient, token_features: dict[int, str]
) -> None:
    config = LLMConfig(base_url=llama_server.base_url, model=llama_server.model, timeout_s=300, max_retries=1,
                       max_in_flight=1, max_output_tokens=384)
    data = FeatureData(activation, SAE, next(iter(token_features)), HeldoutSpec(), seed=0)
    async with LLMBackend(config, config_section="[scoring.llm]") as llm:
        baseline = await SinglePassExplainer(llm, BaselineSettings(top_k=4)).explain((await data.reference()).top)
        assert baseline.text and len(baseline.text) <= 300 and baseline.usage.completion_tokens > 0

        toolkit = Toolkit(activation, llm=llm)
        generative = await run_scorer(build_scorer("generative", toolkit, GenerativeSettings(n_texts=2, attempts=2)),
                                      ScoringInput(baseline.text, data))
        predictive = await run_scorer(build_scorer("predictive", toolkit,
                                                   PredictiveSettings(per_band=1, non_activating=1,
                                                                      readout="logprobs")),
                                      ScoringInput(baseline.text, data))
    for result in (generative, predictive):
        assert result.usage.calls >= 1 and result.usage.prompt_tokens > 0
        if not result.ok:
            assert result.error is not None and result.error.code == grpc.StatusCode.FAILED_PRECONDITION, result.error
            assert "no usable answer" in result.error.message or "usable predictions" in result.error.message
    if generative.ok:
        assert generative.metric("success_rate").n >= 2
