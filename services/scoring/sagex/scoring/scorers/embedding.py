"""Embedding (delphi's EmbeddingScorer, Neuronpedia's eleuther_embedding): rank the
held-out windows by cosine similarity to the explanation; the score is the AUROC
of that ranking for activating (any quantile band) versus silent windows.

No generative LLM is involved: all-MiniLM-L6-v2 embeds the explanation (after an
optional ``query_prefix``) and each window's text. The 95 % interval resamples
within each class; n counts windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np

from sagex.scoring.embedder import EmbedderUnavailable
from sagex.scoring.errors import ScorerFailed
from sagex.scoring.result import Metric
from sagex.scoring.scorers.base import Meter, Scorer, ScorerOutput, ScoringInput, Toolkit, register
from sagex.scoring.stats import auroc, bootstrap_ci


@dataclass(frozen=True)
class EmbeddingSettings:
    query_prefix: str = ""  # all-MiniLM-L6-v2 takes no instruction; instruction-tuned embedders may want one


class EmbeddingScorer(Scorer):
    name = "embedding"

    def __init__(self, toolkit: Toolkit, settings: EmbeddingSettings) -> None:
        self.toolkit = toolkit
        self.settings = settings

    async def score(self, task: ScoringInput, meter: Meter) -> ScorerOutput:
        embedder = self.toolkit.embedder
        if embedder is None:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                               "the embedding scorer needs an embedder; none is configured")
        sample = await task.data.checked_heldout()
        try:
            vectors = await embedder.embed([self.settings.query_prefix + task.explanation, *sample.texts])
        except EmbedderUnavailable as e:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION, str(e)) from e
        similarity = (vectors[1:] @ vectors[0]).astype(np.float64)
        labels = sample.labels
        value = auroc(labels, similarity)
        ci = bootstrap_ci(lambda i: auroc(labels[i], similarity[i]), len(labels), seed=task.seed,
                          strata=labels.astype(int))
        details: dict[str, float | int | str] = {
            "embedder": embedder.name, "positives": int(labels.sum()), "negatives": int((~labels).sum()),
            "mean_similarity_activating": float(similarity[labels].mean()),
            "mean_similarity_non_activating": float(similarity[~labels].mean()),
        }
        return ScorerOutput([Metric("auroc", value, ci, len(labels))], details)


@register("embedding", EmbeddingSettings)
def _build(toolkit: Toolkit, settings: EmbeddingSettings) -> EmbeddingScorer:
    return EmbeddingScorer(toolkit, settings)


__all__ = ["EmbeddingScorer", "EmbeddingSettings"]
