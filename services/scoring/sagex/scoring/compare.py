"""Aggregating scores over features and comparing explainers on them.

Per explainer and metric: the mean over the features where the metric is defined,
with a bootstrap interval over features. Per pair of explainers and metric: the
paired mean difference over the features where both are defined, its bootstrap
interval, wins/ties/losses and a sign-flip permutation p-value. Every feature
that drops out of a mean says why (``Skipped``); none vanishes silently.
Metric keys are "<scorer>.<metric>", e.g. "embedding.auroc".
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sagex.scoring.result import Metric, ScorerOutcome
from sagex.scoring.stats import PairedComparison, mean_ci, paired_difference

# explainer -> feature -> its scorer results, or why it has no explanation
Outcomes = Mapping[str, Mapping[int, Sequence[ScorerOutcome] | str]]


@dataclass(frozen=True)
class Skipped:
    explainer: str
    feature_id: int
    scorer: str  # "" when the explainer gave no explanation at all
    reason: str


@dataclass(frozen=True)
class Comparison:
    summaries: dict[str, list[Metric]]  # explainer -> mean over features per metric key (n = features)
    differences: list[tuple[str, str, str, PairedComparison]]  # (metric key, a, b, a - b)
    skipped: list[Skipped]


def _values(outcomes: Outcomes) -> tuple[dict[str, dict[str, dict[int, float]]], list[Skipped]]:
    values: dict[str, dict[str, dict[int, float]]] = {e: {} for e in outcomes}
    skipped = []
    for explainer, by_feature in outcomes.items():
        for feature, results in by_feature.items():
            if isinstance(results, str):
                skipped.append(Skipped(explainer, feature, "", results))
                continue
            for result in results:
                if result.error is not None:
                    skipped.append(Skipped(explainer, feature, result.scorer, result.error.message))
                    continue
                for m in result.metrics:
                    if m.defined:
                        values[explainer].setdefault(f"{result.scorer}.{m.name}", {})[feature] = m.value
                    else:
                        skipped.append(Skipped(explainer, feature, result.scorer, f"{m.name} undefined (n={m.n})"))
    return values, skipped


def compare(outcomes: Outcomes, seed: int = 0) -> Comparison:
    values, skipped = _values(outcomes)
    summaries = {
        explainer: [Metric(key, float(np.mean(list(per.values()))), mean_ci(list(per.values()), seed=seed), len(per))
                    for key, per in sorted(metrics.items())]
        for explainer, metrics in values.items()
    }
    differences = []
    for a, b in itertools.combinations(list(outcomes), 2):
        for key in sorted(set(values[a]) & set(values[b])):
            features = sorted(set(values[a][key]) & set(values[b][key]))
            if not features:
                continue
            x = [values[a][key][f] for f in features]
            y = [values[b][key][f] for f in features]
            differences.append((key, a, b, paired_difference(x, y, seed=seed)))
    return Comparison(summaries, differences, skipped)


__all__ = ["Comparison", "Outcomes", "Skipped", "compare"]
