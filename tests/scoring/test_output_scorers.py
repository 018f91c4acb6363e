"""The output-side scorers on the embedded model and SAE, over a real activation server
with steering on: intervention (embedding judge; LLM judge through a fake OpenAI server
on a socket), and output (the explanation against the logit lens)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from sagex.activation.config import ActivationConfig
from sagex.llm import LLMBackend, LLMConfig
from sagex.remote.activation import ActivationClient
from sagex.scoring.embedder import MiniLMEmbedder
from sagex.scoring.heldout import FeatureData, HeldoutSpec
from sagex.scoring.result import ScorerOutcome
from sagex.scoring.scorers import ScoringInput, Toolkit, build_scorer, run_scorer
from sagex.scoring.scorers.intervention import NEUTRAL_PROMPTS, InterventionSettings
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.scoring.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")
FEATURES = [100, 777, 2024, 3000]
SMALL = InterventionSettings(n_prompts=8, max_new_tokens=8, control=False)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def steering_client(steer_server: Any) -> AsyncIterator[ActivationClient]:
    _, _, port = steer_server
    client = ActivationClient([f"127.0.0.1:{port}"])
    yield client
    await client.close()


async def _score(kit: Toolkit, name: str, feature: int, explanation: str,
                 settings: object | None = None) -> ScorerOutcome:
    data = FeatureData(kit.activation, SAE, feature, HeldoutSpec(), seed=0)
    return await run_scorer(build_scorer(name, kit, settings), ScoringInput(explanation, data))


async def _lens_words(client: ActivationClient, feature: int) -> str:
    lens = (await client.effects(SAE, [feature], 10))[feature]
    return "words like " + ", ".join(t.strip() for t, _ in lens.promoted if t.strip())


async def test_intervention_embedding_judge_reports_kl_sample_and_control(steering_client: ActivationClient) -> None:
    kit = Toolkit(steering_client, embedder=MiniLMEmbedder())
    settings = InterventionSettings(n_prompts=8, max_new_tokens=8, control=True)
    result = await _score(kit, "intervention", FEATURES[0], await _lens_words(steering_client, FEATURES[0]), settings)
    assert result.ok, result.error
    accuracy, area = result.metrics
    assert (accuracy.name, area.name) == ("accuracy", "auroc")
    d = result.details
    assert accuracy.n == d["prompts"] - d["identical_pairs"] > 0 and area.n == 2 * accuracy.n
    for m in (accuracy, area):
        assert m.ci is not None and m.ci.lower - 1e-9 <= m.value <= m.ci.upper + 1e-9
    assert d["judge"].startswith("embedding") and d["target_reached"] == 1
    assert abs(d["mean_kl"] - 1.0) <= 0.1 and d["strength"] > 0
    assert d["control_feature"] != FEATURES[0] and abs(d["control_mean_kl"] - 1.0) <= 0.1
    assert 0.0 <= d["control_accuracy"] <= 1.0

    # A second explanation of the feature is judged on the same generations (no new steering run).
    scorer = build_scorer("intervention", kit, settings)
    data = FeatureData(kit.activation, SAE, FEATURES[0], HeldoutSpec(), seed=0)
    first = await run_scorer(scorer, ScoringInput("numbers and symbols", data))
    second = await run_scorer(scorer, ScoringInput("a cooking recipe", data))
    assert first.ok and second.ok
    for key in ("mean_kl", "strength", "control_mean_kl", "identical_pairs"):
        assert first.details[key] == second.details[key] == d[key]


def _pairs(prompt: str) -> list[tuple[str, str]]:
    return [(json.loads(a), json.loads(b)) for a, b in re.findall(r'  A: (".*")\n  B: (".*")', prompt)]


async def test_intervention_llm_judge_is_blind_and_scored_right(steering_client: ActivationClient) -> None:
    """An oracle judge that knows the steered texts scores 1.0; a judge that always says A
    scores near chance, which only holds if the steered text is shown at A and at B."""
    truth = await steering_client.steer(SAE, FEATURES[1], NEUTRAL_PROMPTS[: SMALL.n_prompts], target_kl=1.0,
                                        max_new_tokens=SMALL.max_new_tokens)
    steered = {c.steered for c in truth.completions if c.steered != c.unsteered}
    seen: list[list[tuple[str, str]]] = []

    def oracle(body: dict[str, Any]) -> Reply:
        pairs = _pairs(body["messages"][-1]["content"])
        seen.append(pairs)
        return Reply(content=json.dumps({"answers": ["A" if a in steered else "B" for a, _ in pairs]}))

    def always_a(body: dict[str, Any]) -> Reply:
        return Reply(content=json.dumps({"answers": ["A"] * len(_pairs(body["messages"][-1]["content"]))}))

    results = {}
    for name, handler in (("oracle", oracle), ("always_a", always_a)):
        with FakeOpenAI(handler) as fake:
            async with LLMBackend(LLMConfig(base_url=fake.base_url, model="fake-model", max_retries=0)) as llm:
                kit = Toolkit(steering_client, llm=llm)
                results[name] = await _score(kit, "intervention", FEATURES[1], "repeats short words", SMALL)
    assert results["oracle"].ok and results["always_a"].ok, (results["oracle"].error, results["always_a"].error)
    oracle_acc = results["oracle"].metrics[0]
    assert results["oracle"].details["judge"] == "llm" and oracle_acc.value == 1.0 and oracle_acc.n == len(steered)
    at_a = sum(a in steered for a, _ in seen[0])
    assert 0 < at_a < len(seen[0]), "the steered text must be shown at A for some pairs and at B for others"
    assert results["always_a"].metrics[0].value == pytest.approx(at_a / len(seen[0]))


async def test_intervention_needs_a_steering_server(activation: ActivationClient) -> None:
    result = await _score(Toolkit(activation, embedder=MiniLMEmbedder()), "intervention", FEATURES[0], "x", SMALL)
    assert result.error is not None and result.error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "steering" in result.error.message


async def test_output_score_prefers_the_features_own_tokens(activation: ActivationClient) -> None:
    """GA25's VocabProj description (the feature's own top tokens) against another feature's."""
    kit = Toolkit(activation, embedder=MiniLMEmbedder())
    own, other = [], []
    for i, f in enumerate(FEATURES):
        right = await _score(kit, "output", f, await _lens_words(activation, f))
        wrong = await _score(kit, "output", f, await _lens_words(activation, FEATURES[(i + 1) % len(FEATURES)]))
        assert right.ok and wrong.ok, (right.error, wrong.error)
        assert right.metrics[0].n == right.details["feature_tokens"] + right.details["distractor_tokens"]
        own.append(right.metrics[0].value)
        other.append(wrong.metrics[0].value)
    print("output AUROC own tokens:", [round(v, 3) for v in own], "other feature's:", [round(v, 3) for v in other])
    assert sum(o > w for o, w in zip(own, other, strict=True)) >= 3
    assert sum(own) / len(own) > 0.55


async def test_default_intervention_request_fits_a_default_server() -> None:
    """The scorer sends all its neutral prompts in one SteerGenerate; a server with default
    limits must accept the largest request the scorer's settings allow (it once refused 20 > 16)."""
    limits = ActivationConfig()
    assert len(NEUTRAL_PROMPTS) <= limits.max_steer_prompts
    assert InterventionSettings().max_new_tokens <= limits.max_steer_new_tokens
