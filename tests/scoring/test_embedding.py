"""The embedding scorer over real gRPC: the embedded SmolLM2 + SAE on the held-out
split, all-MiniLM-L6-v2 for the embeddings."""

from __future__ import annotations

import pytest

from sagex.remote.activation import ActivationClient
from sagex.scoring.embedder import MiniLMEmbedder
from sagex.scoring.heldout import FeatureData, HeldoutSpec
from sagex.scoring.scorers import ScoringInput, Toolkit, build_scorer, run_scorer
from tests.scoring.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")

WRONG = "numbers and dates in tables"


async def test_a_correct_token_explanation_ranks_clearly_above_a_wrong_one(
    activation: ActivationClient, token_features: dict[int, str]
) -> None:
    # Whole-window embeddings cannot see function words ("and", "of"), so the check
    # uses the token-level features whose word is a content word.
    content = {f: w for f, w in token_features.items() if len(w) >= 5}
    assert content, f"no content-word token feature among {token_features}"
    scorer = build_scorer("embedding", Toolkit(activation, embedder=MiniLMEmbedder()))
    scored = {}
    for feature, word in content.items():
        data = FeatureData(activation, SAE, feature, HeldoutSpec(), seed=0)
        right = await run_scorer(scorer, ScoringInput(f'the word "{word}"', data))
        if not right.ok:  # too few held-out windows for this feature: reported, not raised
            assert "too few held-out examples" in right.error.message  # type: ignore[union-attr]
            continue
        wrong = await run_scorer(scorer, ScoringInput(WRONG, data))
        scored[word] = (right.metric("auroc"), wrong.metric("auroc"))
    assert scored, "every content-word feature lacked held-out examples"
    for word, (right, wrong) in scored.items():
        assert right.value > wrong.value + 0.1, (word, right, wrong)
        assert right.ci is not None and right.n >= 12 and right.n == wrong.n
    best_right, best_wrong = max(scored.values(), key=lambda rw: rw[0].value)
    assert best_right.value >= 0.65 and best_right.ci.lower > best_wrong.value  # type: ignore[union-attr]


async def test_the_score_is_reproducible_by_seed(activation: ActivationClient, token_features: dict[int, str]) -> None:
    feature = next(iter(token_features))
    scorer = build_scorer("embedding", Toolkit(activation, embedder=MiniLMEmbedder()))
    runs = [await run_scorer(scorer, ScoringInput("a word", FeatureData(activation, SAE, feature, HeldoutSpec(), seed)))
            for seed in (0, 0)]
    assert runs[0].metrics == runs[1].metrics and runs[0].ok
