"""What a report shows: SDK results grouped per feature, plus an optional comparison."""

from __future__ import annotations

from dataclasses import dataclass

from sagex.sdk import Comparison, Explanation, ScorerResult
from sagex.sdk.types import FeatureEffects, FeatureExemplars, SteerResult


@dataclass(frozen=True)
class FeatureReport:
    explanation: Explanation
    exemplars: FeatureExemplars | None = None  # None when no activation service was given
    scores: tuple[ScorerResult, ...] = ()
    score_error: str = ""  # why the feature was not scored, when it was not
    effects: FeatureEffects | None = None  # the logit lens, when the activation service gave it
    steering: SteerResult | None = None  # steered beside unsteered continuations, when asked for

    @property
    def feature_id(self) -> int:
        return self.explanation.feature_id

    def scale(self) -> float:
        """The activation that maps to full colour: the feature's own maximum, so
        probes and exemplars of one feature share one scale."""
        values = [self.explanation.max_activation, *(p.max_activation for p in self.explanation.probes)]
        if self.exemplars is not None:
            values += [e.max_activation for e in self.exemplars.top]
        return max([v for v in values if v > 0], default=1.0)


@dataclass(frozen=True)
class Report:
    title: str
    sae: str
    created: str  # ISO 8601, UTC
    features: tuple[FeatureReport, ...]
    comparison: Comparison | None = None
    notes: tuple[str, ...] = ()  # how the report was made (scorers, policy, what was left out and why)
