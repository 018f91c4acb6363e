"""What a scorer hands back: metrics with intervals and sample sizes, or the reason
it could not run. Plain data; the servicer turns it into ScorerResult protos."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc

from sagex.llm import Usage
from sagex.scoring.stats import Interval


@dataclass(frozen=True)
class Metric:
    name: str  # e.g. "success_rate", "pearson_r", "balanced_accuracy", "auroc"
    value: float  # NaN when undefined on this sample (then ci is None)
    ci: Interval | None  # 95 % bootstrap interval; None when it cannot be estimated
    n: int  # sample size behind the value (texts, tokens or examples; the scorer's docstring says which)

    @property
    def defined(self) -> bool:
        return math.isfinite(self.value)


@dataclass(frozen=True)
class ScorerError:
    code: grpc.StatusCode  # FAILED_PRECONDITION: cannot run on this input; UNAVAILABLE: a dependency is down
    message: str


@dataclass(frozen=True)
class ScorerOutcome:
    scorer: str
    metrics: tuple[Metric, ...] = ()
    error: ScorerError | None = None
    usage: Usage = Usage()
    # Settings and counts behind the metrics (tau, G, sample composition, the read-out
    # method), for reports and debugging; the API has no field for them yet.
    details: Mapping[str, float | int | str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{self.scorer} reported no metric {name!r}; it has {[m.name for m in self.metrics]}")


__all__ = ["Metric", "ScorerOutcome", "ScorerError"]
