"""Generative, predictive, detection and fuzzing end to end: a FakeOpenAI server
(real HTTP, real openai client) plays a literal-minded LLM; activations come from
the real activation server over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from sagex.llm import LLMBackend, LLMConfig
from sagex.remote.activation import ActivationClient
from sagex.scoring.heldout import FeatureData, HeldoutSpec
from sagex.scoring.result import ScorerOutcome
from sagex.scoring.scorers import ScoringInput, Toolkit, build_scorer, run_scorer
from sagex.scoring.scorers.generative import GenerativeSettings
from sagex.scoring.scorers.predictive import PredictiveSettings
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.scoring import scripted
from tests.scoring.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")

RIGHT = 'the word "all"'
WRONG = 'the word "because"'


@pytest.fixture(scope="session")
def all_feature(token_features: dict[int, str]) -> int:
    """The measured token-level feature for "all" (fires on "all" and hardly elsewhere)."""
    found = [f for f, w in token_features.items() if w == "all"]
    assert found, f"no 'all' feature among {token_features}"
    return found[0]


@asynccontextmanager
async def toolkit(activation: ActivationClient, handler: Callable[[dict[str, Any]], Any], **fake_options: Any
                  ) -> AsyncIterator[tuple[Toolkit, FakeOpenAI]]:
    with FakeOpenAI(handler, **fake_options) as fake:
        async with LLMBackend(LLMConfig(base_url=fake.base_url, model="fake-model", max_retries=0)) as llm:
            yield Toolkit(activation, llm=llm, llm_concurrency=4), fake


async def score(kit: Toolkit, name: str, feature: int, explanation: str, settings: object | None = None,
                seed: int = 0) -> ScorerOutcome:
    data = FeatureData(kit.activation, SAE, feature, HeldoutSpec(), seed)
    return await run_scorer(build_scorer(name, kit, settings), ScoringInput(explanation, data))


def assert_metrics(result: ScorerOutcome, *names: str) -> None:
    assert result.ok, result.error
    assert [m.name for m in result.metrics][: len(names)] == list(names)
    for m in result.metrics:
        assert m.n > 0 and m.ci is not None and m.ci.level == 0.95
        assert m.ci.lower - 1e-9 <= m.value <= m.ci.upper + 1e-9, m


# --- generative ----------------------------------------------------------------------


async def test_generative_separates_right_from_wrong(activation: ActivationClient, all_feature: int) -> None:
    async with toolkit(activation, scripted.generative) as (kit, fake):
        right = await score(kit, "generative", all_feature, RIGHT, GenerativeSettings(n_texts=8))
        wrong = await score(kit, "generative", all_feature, "numbers in text", GenerativeSettings(n_texts=6))
    assert_metrics(right, "success_rate", "mean_max_activation", "false_positive_rate", "auroc",
                   "location_accuracy")
    # Two scripted texts miss: "Not all" does not fire, and "All the ..." puts the word on
    # the first token, which is never scored (the attention-sink position).
    assert right.metric("success_rate").value == 0.75 and right.metric("success_rate").n == 8
    assert right.metric("false_positive_rate").value == 0.0 and right.metric("false_positive_rate").n == 8
    assert right.metric("auroc").value >= 0.85
    assert right.metric("location_accuracy").value == 1.0 and right.metric("location_accuracy").n == 6
    assert right.details["tau"] > 0 and right.details["global_max"] >= 2 * right.details["tau"] - 1e-6
    assert right.details["context_tokens"] > 0 and "without the word all" in str(right.details["contrast_description"])
    assert right.usage.calls == 1 and right.usage.prompt_tokens > 0
    assert "the word \"all\"" in fake.requests[0]["messages"][1]["content"]

    assert wrong.ok and wrong.metric("success_rate").value <= 0.2
    assert wrong.metric("mean_max_activation").value < right.metric("mean_max_activation").value


# --- predictive ----------------------------------------------------------------------


async def test_predictive_logprob_path(activation: ActivationClient, all_feature: int) -> None:
    async with toolkit(activation, scripted.simulator(logprobs=True)) as (kit, fake):
        right = await score(kit, "predictive", all_feature, RIGHT)
        wrong = await score(kit, "predictive", all_feature, WRONG)
    assert_metrics(right, "pearson_r", "missing_rate", "logprob_fraction")
    assert right.metric("pearson_r").value >= 0.6
    assert right.metric("logprob_fraction").value == 1.0 and right.details["readout"] == "logprobs"
    assert right.metric("missing_rate").value == 0.0
    # Whole sequences per call: one request per held-out text, each asking for logprobs.
    texts = int(right.details["texts"])
    assert texts == 3 * 3 + 6 and right.usage.calls == texts
    assert all(r.get("logprobs") and r.get("top_logprobs") == 20 for r in fake.requests)
    # The wrong word barely occurs: r is undefined (constant predictions) or low.
    r = wrong.metric("pearson_r") if wrong.ok else None
    assert r is None or not r.defined or r.value < 0.3


async def test_predictive_fallback_without_logprobs(activation: ActivationClient, all_feature: int) -> None:
    async with toolkit(activation, scripted.simulator(logprobs=False)) as (kit, _):
        result = await score(kit, "predictive", all_feature, RIGHT)
    assert_metrics(result, "pearson_r", "missing_rate", "logprob_fraction")
    assert result.metric("logprob_fraction").value == 0.0 and result.details["readout"] == "sampled"
    assert result.metric("pearson_r").value >= 0.6


async def test_predictive_records_missing_digits_instead_of_zeros(
    activation: ActivationClient, all_feature: int
) -> None:
    async with toolkit(activation, scripted.simulator(logprobs=True, missing_at=1)) as (kit, _):
        result = await score(kit, "predictive", all_feature, RIGHT)
    assert result.ok, result.error
    missing, r = result.metric("missing_rate"), result.metric("pearson_r")
    texts = int(result.details["texts"])
    assert missing.value == pytest.approx(texts / missing.n)  # one missing token per text
    assert r.n == missing.n - texts  # r is over the predicted tokens only


async def test_predictive_refuses_when_logprobs_are_required_but_absent(
    activation: ActivationClient, all_feature: int
) -> None:
    async with toolkit(activation, scripted.simulator(logprobs=False)) as (kit, _):
        result = await score(kit, "predictive", all_feature, RIGHT, PredictiveSettings(readout="logprobs"))
    assert result.error is not None and result.error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "logprobs" in result.error.message and result.usage.calls >= 1


async def test_predictive_re_asks_a_wrong_length_then_gives_up(activation: ActivationClient, all_feature: int) -> None:
    async with toolkit(activation, lambda body: Reply(content="[0, 0]")) as (kit, fake):
        result = await score(kit, "predictive", all_feature, RIGHT, PredictiveSettings(per_band=1, non_activating=1))
    # Every text stays unaligned after two attempts: nothing usable, a clear error.
    assert result.error is not None and result.error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "usable predictions for 0" in result.error.message
    assert len(fake.requests) == 2 * 4 and result.usage.calls == 8
    assert "exactly" in fake.requests[1]["messages"][-1]["content"]


# --- detection and fuzzing -----------------------------------------------------------


@pytest.mark.parametrize("name", ["detection", "fuzzing"])
async def test_classifiers_with_logprobs(activation: ActivationClient, all_feature: int, name: str) -> None:
    async with toolkit(activation, scripted.classifier(logprobs=True)) as (kit, fake):
        right = await score(kit, name, all_feature, RIGHT)
        wrong = await score(kit, name, all_feature, WRONG)
    assert_metrics(right, "balanced_accuracy", "f1", "auroc")
    assert right.metric("balanced_accuracy").value >= 0.8 and right.metric("auroc").value >= 0.8
    n = right.details["positives"] + right.details["negatives"]
    assert right.metric("balanced_accuracy").n == n and right.details["unanswered"] == 0
    assert right.usage.calls == -(-n // 5)  # five examples per prompt
    assert wrong.ok and wrong.metric("balanced_accuracy").value <= 0.6
    if name == "fuzzing":
        assert any("<<" in m["content"] for r in fake.requests for m in r["messages"])
    else:
        assert not any("<<" in m["content"] for r in fake.requests for m in r["messages"][1:])


async def test_detection_without_logprobs_has_no_auroc(activation: ActivationClient, all_feature: int) -> None:
    async with toolkit(activation, scripted.classifier(logprobs=False)) as (kit, _):
        result = await score(kit, "detection", all_feature, RIGHT)
    assert_metrics(result, "balanced_accuracy", "f1")
    assert "auroc" not in [m.name for m in result.metrics]


# --- endpoints that refuse logprobs ----------------------------------------------------


@pytest.mark.parametrize(("name", "param"), [("detection", "logprobs"), ("fuzzing", None),
                                             ("predictive", "top_logprobs")])
async def test_scorers_read_written_answers_when_the_endpoint_refuses_logprobs(
        activation: ActivationClient, all_feature: int, name: str, param: str | None) -> None:
    """HTTP 400 to logprobs (naming the parameter, or only saying so in the message):
    the call is made again without them, and the endpoint is remembered as one
    that has none, instead of the scorer failing as UNAVAILABLE."""
    handler = scripted.simulator(logprobs=True) if name == "predictive" else scripted.classifier(logprobs=True)
    async with toolkit(activation, handler, reject_logprobs=True, logprobs_error_param=param) as (kit, fake):
        result = await score(kit, name, all_feature, RIGHT)
        refused, first_run = sum(bool(r.get("logprobs")) for r in fake.requests), len(fake.requests)
        await score(kit, name, all_feature, RIGHT, seed=1)
    if name == "predictive":
        assert_metrics(result, "pearson_r", "missing_rate", "logprob_fraction")
        assert result.details["readout"] == "sampled" and result.metric("pearson_r").value >= 0.6
    else:
        assert_metrics(result, "balanced_accuracy", "f1")
        assert "auroc" not in [m.name for m in result.metrics]
        assert result.metric("balanced_accuracy").value >= 0.8
    # Only the calls already in flight when the first refusal came asked for logprobs; later runs never do.
    assert 1 <= refused <= kit.llm_concurrency and first_run == refused + result.usage.calls
    assert sum(bool(r.get("logprobs")) for r in fake.requests) == refused


async def test_other_bad_requests_still_fail_the_scorer(activation: ActivationClient, all_feature: int) -> None:
    reply = Reply(status=400, error="temperature must be at most 1", error_param="temperature")
    async with toolkit(activation, lambda body: reply) as (kit, fake):
        result = await score(kit, "detection", all_feature, RIGHT)
    assert result.error is not None and result.error.code == grpc.StatusCode.UNAVAILABLE
    assert "temperature" in result.error.message
    assert all(r.get("logprobs") for r in fake.requests)  # no retry without logprobs for an unrelated refusal


@pytest.mark.asyncio(loop_scope="session")
async def test_fuzzing_marks_as_many_random_tokens_on_negatives_as_activating_examples_have_nonzero() -> None:
    import re

    import numpy as np

    from sagex.remote.traces import Trace
    from sagex.scoring.scorers.fuzzing import fuzzed_examples

    def trace(values: list[float]) -> Trace:
        tokens = tuple(" " + chr(ord("a") + i) for i in range(len(values)))
        return Trace("".join(tokens), tuple(range(len(values))), tokens, frozenset(), np.array(values, np.float32))

    # Nonzero at 3 content positions, only one of them >= 0.3 x max: negatives get 3 marks, not 1.
    active = trace([0.0, 5.0, 1.0, 0.5, 0.0, 0.0])
    silent = trace([0.0] * 8)
    activating_text, negative_text = fuzzed_examples([active], [silent], 0.3, seed=0)
    marked = lambda text: sum(len(run.split()) for run in re.findall(r"<<(.*?)>>", text))  # noqa: E731
    assert marked(activating_text) == 1 and marked(negative_text) == 3
