"""Output: does the explanation predict the tokens the feature promotes (its logit lens)?

The activation service's GetFeatureEffects gives the top-``k`` promoted tokens of the
feature (decoder direction through the final norm and unembedding) and of
``distractors`` random other features of the same SAE (GA25's distractors). Each token
is embedded (all-MiniLM-L6-v2) and compared with the explanation; the score is the
AUROC of that similarity, the feature's own tokens versus the distractors' (0.5:
the explanation says nothing about what the feature makes the model say). The 95 %
interval resamples tokens within each group; n counts tokens. Tokens that are
blank after stripping are dropped (they carry no meaning for an embedder).

Only output features can be expected to score well here (causal.md §4.4): a feature
of an early layer whose lens is noise scores ≈0.5 whatever the explanation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc
import numpy as np

from sagex.scoring.embedder import EmbedderUnavailable
from sagex.scoring.errors import ScorerFailed
from sagex.scoring.result import Metric
from sagex.scoring.scorers.base import Meter, Scorer, ScorerOutput, ScoringInput, Toolkit, register
from sagex.scoring.stats import auroc, bootstrap_ci


@dataclass(frozen=True)
class OutputSettings:
    top_k: int = 20  # AR25's k
    distractors: int = 4

    def __post_init__(self) -> None:
        if not 5 <= self.top_k <= 100 or not 1 <= self.distractors <= 16:
            raise ValueError("output: top_k must be in 5..100, distractors in 1..16")


class OutputScorer(Scorer):
    name = "output"

    def __init__(self, toolkit: Toolkit, settings: OutputSettings) -> None:
        self.toolkit = toolkit
        self.settings = settings

    async def score(self, task: ScoringInput, meter: Meter) -> ScorerOutput:
        embedder = self.toolkit.embedder
        if embedder is None:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                               "the output scorer needs an embedder; none is configured")
        data = task.data
        sae = await self.toolkit.activation.sae(data.sae_id)
        if sae is None or sae.d_sae <= self.settings.distractors:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                               f"SAE {data.sae_id!r} has too few features for distractors")
        rng = random.Random(task.seed * 1_000_003 + data.feature_id)
        others = rng.sample([f for f in range(sae.d_sae) if f != data.feature_id], self.settings.distractors)
        lens = await self.toolkit.activation.effects(data.sae_id, [data.feature_id, *others], self.settings.top_k)
        own = [t.strip() for t, _ in lens[data.feature_id].promoted if t.strip()]
        rest = [t.strip() for f in others for t, _ in lens[f].promoted if t.strip()]
        if not own or not rest:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION, "the logit lens gave no non-blank tokens")
        try:
            v = await embedder.embed([task.explanation, *own, *rest])
        except EmbedderUnavailable as e:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION, str(e)) from e
        sim = (v[1:] @ v[0]).astype(np.float64)
        labels = np.array([True] * len(own) + [False] * len(rest))
        value = auroc(labels, sim)
        ci = bootstrap_ci(lambda i: auroc(labels[i], sim[i]), len(labels), seed=task.seed, strata=labels.astype(int))
        details: dict[str, float | int | str] = {
            "embedder": embedder.name, "feature_tokens": len(own), "distractor_tokens": len(rest),
            "distractor_features": ",".join(map(str, others)), "top_tokens": " | ".join(own[:10]),
        }
        return ScorerOutput([Metric("auroc", value, ci, len(labels))], details)


@register("output", OutputSettings)
def _build(toolkit: Toolkit, settings: OutputSettings) -> OutputScorer:
    return OutputScorer(toolkit, settings)


__all__ = ["OutputScorer", "OutputSettings"]
