"""Scoring explanations with several scorers at once: the scorers of one request
share the feature's reference and held-out sample, and run concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sagex.llm import LLMBackend
from sagex.remote.activation import ActivationClient
from sagex.scoring.config import SCORERS, ScoringConfig
from sagex.scoring.embedder import Embedder
from sagex.scoring.heldout import FeatureData
from sagex.scoring.result import ScorerOutcome
from sagex.scoring.scorers import Scorer, ScoringInput, Toolkit, build_scorer, run_scorer


@dataclass(frozen=True)
class ExplanationRef:
    sae_id: str
    feature_id: int
    text: str


class ScoringEngine:
    def __init__(self, config: ScoringConfig, activation: ActivationClient, llm: LLMBackend | None,
                 embedder: Embedder | None) -> None:
        self.config = config
        self.activation = activation
        self.toolkit = Toolkit(activation, llm, embedder, config.llm_concurrency)
        self.scorers: dict[str, Scorer] = {
            name: build_scorer(name, self.toolkit, config.settings_of(name)) for name in SCORERS
        }

    def feature_data(self, sae_id: str, feature_id: int, seed: int) -> FeatureData:
        return FeatureData(self.activation, sae_id, feature_id, self.config.heldout, seed)

    async def score(self, explanation: ExplanationRef, scorers: Sequence[str], seed: int,
                    data: FeatureData | None = None) -> list[ScorerOutcome]:
        """One result per scorer, in the order named; failures are results with an error.
        Pass ``data`` to score several explanations of a feature on the same sample."""
        data = data or self.feature_data(explanation.sae_id, explanation.feature_id, seed)
        task = ScoringInput(explanation.text, data)
        names = list(scorers) or list(self.config.default_scorers)
        return list(await asyncio.gather(*(run_scorer(self.scorers[name], task) for name in names)))


__all__ = ["ExplanationRef", "ScoringEngine"]
