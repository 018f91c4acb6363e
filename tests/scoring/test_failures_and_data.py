"""What scorers do when they cannot run (an error status with the reason, never an
exception), and the held-out data they run on."""

from __future__ import annotations

import grpc
import pytest

from sagex.api.common.v1 import types_pb2
from sagex.llm import LLMBackend, LLMConfig
from sagex.remote.activation import ActivationClient
from sagex.scoring.heldout import FeatureData, HeldoutSpec
from sagex.scoring.scorers import ScoringInput, Toolkit, build_scorer, run_scorer, scorer_names
from tests.fakes.openai_server import FakeOpenAI, Reply, closed_port_url
from tests.scoring import scripted
from tests.scoring.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")

LLM_SCORERS = ["generative", "predictive", "detection", "fuzzing"]


async def test_registry_names_every_scorer() -> None:
    assert scorer_names() == ["detection", "embedding", "fuzzing", "generative", "intervention", "output", "predictive"]
    with pytest.raises(ValueError, match="unknown scorer 'simulation'; known: detection, embedding"):
        build_scorer("simulation", Toolkit(activation=None))  # type: ignore[arg-type]


async def test_a_dead_feature_is_reported_not_raised(activation: ActivationClient, dead_feature: int) -> None:
    with FakeOpenAI(scripted.generative) as fake:
        async with LLMBackend(LLMConfig(base_url=fake.base_url, model="m", max_retries=0)) as llm:
            kit = Toolkit(activation, llm=llm)
            data = FeatureData(activation, SAE, dead_feature, HeldoutSpec(), seed=0)
            results = [await run_scorer(build_scorer(n, kit), ScoringInput("anything", data))
                       for n in ("generative", "predictive")]
        assert not fake.requests  # nothing spent on a feature that cannot be scored
    for result in results:
        assert result.error is not None and result.error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "dead feature" in result.error.message and not result.metrics


async def test_too_few_held_out_examples(activation: ActivationClient, token_features: dict[int, str]) -> None:
    feature = next(iter(token_features))
    spec = HeldoutSpec(min_activating=1000)
    data = FeatureData(activation, SAE, feature, spec, seed=0)
    result = await run_scorer(build_scorer("embedding", Toolkit(activation, embedder=None)),
                              ScoringInput("x", data))
    assert result.error is not None and "needs an embedder" in result.error.message
    from sagex.scoring.embedder import MiniLMEmbedder

    result = await run_scorer(build_scorer("embedding", Toolkit(activation, embedder=MiniLMEmbedder())),
                              ScoringInput("x", data))
    assert result.error is not None and result.error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "too few held-out examples" in result.error.message and "need 1000" in result.error.message


@pytest.mark.parametrize("name", LLM_SCORERS)
async def test_no_llm_configured(activation: ActivationClient, token_features: dict[int, str], name: str) -> None:
    data = FeatureData(activation, SAE, next(iter(token_features)), HeldoutSpec(), seed=0)
    result = await run_scorer(build_scorer(name, Toolkit(activation)), ScoringInput("x", data))
    assert result.error is not None and result.error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "needs an LLM" in result.error.message


@pytest.mark.parametrize("name", LLM_SCORERS)
async def test_unreachable_llm_is_unavailable(activation: ActivationClient, token_features: dict[int, str],
                                              name: str) -> None:
    async with LLMBackend(LLMConfig(base_url=closed_port_url(), model="m", max_retries=0)) as llm:
        data = FeatureData(activation, SAE, next(iter(token_features)), HeldoutSpec(), seed=0)
        result = await run_scorer(build_scorer(name, Toolkit(activation, llm=llm)), ScoringInput("x", data))
    assert result.error is not None and result.error.code == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach" in result.error.message


async def test_malformed_answers_end_in_an_error_with_usage(activation: ActivationClient,
                                                            token_features: dict[int, str]) -> None:
    with FakeOpenAI(lambda body: Reply(content="Sure! Here are some sentences about it.")) as fake:
        async with LLMBackend(LLMConfig(base_url=fake.base_url, model="m", max_retries=0)) as llm:
            data = FeatureData(activation, SAE, next(iter(token_features)), HeldoutSpec(), seed=0)
            gen = await run_scorer(build_scorer("generative", Toolkit(activation, llm=llm)), ScoringInput("x", data))
            det = await run_scorer(build_scorer("detection", Toolkit(activation, llm=llm)), ScoringInput("x", data))
    assert gen.error is not None and gen.error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no usable answer after 3 attempt(s)" in gen.error.message and gen.usage.calls == 3
    assert det.error is not None and "answered 0 of" in det.error.message and det.usage.calls > 0


async def test_held_out_sample_is_reproducible_and_disjoint_from_exemplars(
    activation: ActivationClient, token_features: dict[int, str]
) -> None:
    feature = next(iter(token_features))
    a = await FeatureData(activation, SAE, feature, HeldoutSpec(), seed=0).heldout()
    b = await FeatureData(activation, SAE, feature, HeldoutSpec(), seed=0).heldout()
    c = await FeatureData(activation, SAE, feature, HeldoutSpec(), seed=1).heldout()
    assert a.texts == b.texts and a.texts != c.texts
    assert list(a.band_of) == sorted(a.band_of) and set(a.band_of) == {0, 1, 2}
    assert all(t.max_activation > 0 for t in a.activating) and all(t.max_activation == 0 for t in a.non_activating)
    # Low band below high band: bands are activation quantiles, not list positions.
    low = [t.max_activation for t, band in zip(a.activating, a.band_of, strict=True) if band == 0]
    high = [t.max_activation for t, band in zip(a.activating, a.band_of, strict=True) if band == 2]
    assert max(low) <= min(high)
    # Explainers read the exemplar split; nothing scored on is ever shown to them.
    shown = await activation.exemplars(SAE, feature, top_k=50, bands=3, per_band=20, non_activating=50, seed=0,
                                       split=types_pb2.CORPUS_SPLIT_EXEMPLAR)
    seen = {t.text for t in (*shown.top, *shown.non_activating, *(t for b in shown.bands for t in b[2]))}
    assert not seen & set(a.texts)
    small = a.subset(per_band=2, non_activating=3, seed=0)
    assert len(small.activating) == 6 and len(small.non_activating) == 3
    assert small.texts == a.subset(per_band=2, non_activating=3, seed=0).texts


async def test_gather_limited_cancels_the_rest_on_the_first_failure() -> None:
    import asyncio

    kit = Toolkit(activation=None, llm_concurrency=2)  # type: ignore[arg-type]
    finished: list[int] = []

    async def ok(i: int) -> int:
        await asyncio.sleep(0.01 * i)
        finished.append(i)
        return i

    async def bad() -> int:
        await asyncio.sleep(0.015)
        raise KeyError("boom")

    assert await kit.gather_limited([lambda i=i: ok(i) for i in range(4)]) == [0, 1, 2, 3]
    finished.clear()
    with pytest.raises(KeyError, match="boom"):
        await kit.gather_limited([lambda: ok(1), bad, lambda: ok(10), lambda: ok(20)])
    await asyncio.sleep(0.3)
    assert finished == [1]  # the calls still queued or running were cancelled
