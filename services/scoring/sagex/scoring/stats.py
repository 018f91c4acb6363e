"""The statistics every scorer reports: classification and correlation metrics,
percentile-bootstrap confidence intervals, and paired comparisons.

Metric functions return NaN where the metric is undefined (a single class, zero
variance) instead of a made-up number; the bootstrap drops such resamples and
says how many it kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
MIN_VALID_FRACTION = 0.5  # fewer defined resamples than this: no interval


@dataclass(frozen=True)
class Interval:
    lower: float
    upper: float
    level: float = DEFAULT_LEVEL

    def __contains__(self, value: float) -> bool:
        return self.lower <= value <= self.upper


# --- point metrics -----------------------------------------------------------------


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson r; NaN when either side is constant or there are fewer than 2 points."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(a) != len(b):
        raise ValueError(f"pearson: {len(a)} vs {len(b)} values")
    if len(a) < 2 or _constant(a) or _constant(b):
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(da @ da) * float(db @ db))
    if denom == 0.0:
        return math.nan
    return float(np.clip(float(da @ db) / denom, -1.0, 1.0))


def _constant(x: np.ndarray) -> bool:
    # Rounding noise (0.1 computed two ways) is not variance.
    return bool(np.ptp(x) <= 1e-9 * max(1.0, float(np.abs(x).max())))


def _binary(y: Sequence[bool] | np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=bool)


def balanced_accuracy(y_true: Sequence[bool] | np.ndarray, y_pred: Sequence[bool] | np.ndarray) -> float:
    """(TPR + TNR) / 2; NaN unless both classes are present."""
    t, p = _binary(y_true), _binary(y_pred)
    if t.all() or not t.any():
        return math.nan
    return float((p[t].mean() + (~p[~t]).mean()) / 2)


def precision(y_true: Sequence[bool] | np.ndarray, y_pred: Sequence[bool] | np.ndarray) -> float:
    t, p = _binary(y_true), _binary(y_pred)
    return float((t & p).sum() / p.sum()) if p.any() else math.nan


def recall(y_true: Sequence[bool] | np.ndarray, y_pred: Sequence[bool] | np.ndarray) -> float:
    t, p = _binary(y_true), _binary(y_pred)
    return float((t & p).sum() / t.sum()) if t.any() else math.nan


def f1(y_true: Sequence[bool] | np.ndarray, y_pred: Sequence[bool] | np.ndarray) -> float:
    """2·TP / (2·TP + FP + FN); NaN when there are no positives on either side."""
    t, p = _binary(y_true), _binary(y_pred)
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan


def auroc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney rank statistic: the chance that
    a random positive outscores a random negative, ties counting one half."""
    y, s = _binary(labels), np.asarray(scores, np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)  # average ranks: ties split evenly
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- bootstrap ---------------------------------------------------------------------


def _sampler(n: int, strata: np.ndarray | None, clusters: np.ndarray | None
             ) -> Callable[[np.random.Generator], np.ndarray]:
    """Draws the indices of one bootstrap resample of n units.

    ``clusters``: resample whole clusters (e.g. the tokens of one text together);
    ``strata``: resample within each stratum, keeping its size (e.g. positives and
    negatives separately, so every resample has both classes)."""
    if clusters is not None:
        groups = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
        return lambda rng: np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
    if strata is not None:
        parts = [np.flatnonzero(strata == s) for s in np.unique(strata)]
        return lambda rng: np.concatenate([p[rng.integers(0, len(p), len(p))] for p in parts])
    return lambda rng: rng.integers(0, n, size=n)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    strata: Sequence[int] | np.ndarray | None = None,
    clusters: Sequence[int] | np.ndarray | None = None,
) -> Interval | None:
    """Percentile bootstrap interval of ``statistic(indices)`` over n units.

    ``statistic`` gets an index array into the caller's data (with repeats) and
    returns a float, NaN when undefined on that resample. Returns None when n is 0
    or fewer than half of the resamples give a defined value."""
    if n <= 0:
        return None
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    draw = _sampler(n, None if strata is None else np.asarray(strata),
                    None if clusters is None else np.asarray(clusters))
    values = np.array([statistic(draw(rng)) for _ in range(resamples)], np.float64)
    values = values[np.isfinite(values)]
    if len(values) < MIN_VALID_FRACTION * resamples:
        return None
    alpha = (1 - level) / 2
    lower, upper = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(lower), float(upper), level)


def mean_ci(
    values: Sequence[float] | np.ndarray, *, seed: int = 0, resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> Interval | None:
    """Percentile bootstrap interval of a mean, vectorised (no Python loop). None
    below two values: one value says nothing about its spread."""
    x = np.asarray(values, np.float64)
    if len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    alpha = (1 - level) / 2
    lower, upper = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(lower), float(upper), level)


def proportion_ci(successes: Sequence[bool] | np.ndarray, *, level: float = DEFAULT_LEVEL) -> Interval | None:
    """Wilson score interval of a proportion. Unlike a bootstrap it does not
    collapse to [1, 1] when every trial succeeded (20 of 20 is not certainty)."""
    from scipy.stats import norm

    x = np.asarray(successes, bool)
    n = len(x)
    if n == 0:
        return None
    z = float(norm.ppf(1 - (1 - level) / 2))
    p = x.mean()
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(float(max(0.0, centre - half)), float(min(1.0, centre + half)), level)


# --- paired comparison ---------------------------------------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """a - b over the units (features) where both have a value."""

    mean_difference: float
    ci: Interval | None
    n: int
    wins: int
    ties: int
    losses: int
    p_value: float  # two-sided sign-flip permutation test of mean difference 0


def paired_difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, tie_tolerance: float = 1e-9,
) -> PairedComparison:
    """Paired bootstrap of the mean difference, win/tie/loss counts and a sign-flip
    permutation p-value. Pairs with a NaN on either side are left out."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(x) != len(y):
        raise ValueError(f"paired_difference: {len(x)} vs {len(y)} values")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    if len(d) == 0:
        return PairedComparison(math.nan, None, 0, 0, 0, 0, math.nan)
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(resamples, len(d)))
    null = np.abs((signs * d).mean(axis=1))
    p_value = float((1 + (null >= abs(d.mean()) - 1e-12).sum()) / (resamples + 1))
    return PairedComparison(
        mean_difference=float(d.mean()),
        ci=mean_ci(d, seed=seed, resamples=resamples, level=level),
        n=len(d),
        wins=int((d > tie_tolerance).sum()),
        ties=int((np.abs(d) <= tie_tolerance).sum()),
        losses=int((d < -tie_tolerance).sum()),
        p_value=p_value,
    )


__all__ = [
    "Interval",
    "PairedComparison",
    "auroc",
    "balanced_accuracy",
    "bootstrap_ci",
    "f1",
    "mean_ci",
    "proportion_ci",
    "paired_difference",
    "pearson",
    "precision",
    "recall",
]
