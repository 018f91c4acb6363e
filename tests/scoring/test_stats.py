"""Metrics against hand-computed cases; bootstrap intervals against known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from sagex.scoring.stats import (
    auroc,
    balanced_accuracy,
    bootstrap_ci,
    f1,
    mean_ci,
    paired_difference,
    pearson,
    precision,
    recall,
)

# 6 positives, 4 negatives: TP 4, FN 2, TN 3, FP 1.
Y = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
P = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]


def test_classification_metrics_by_hand() -> None:
    assert balanced_accuracy(Y, P) == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert precision(Y, P) == pytest.approx(4 / 5)
    assert recall(Y, P) == pytest.approx(4 / 6)
    assert f1(Y, P) == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert math.isnan(balanced_accuracy([1, 1], [1, 0]))  # one class: undefined, not 0.5
    assert math.isnan(f1([0, 0], [0, 0]))


def test_auroc_is_the_rank_statistic_with_half_ties() -> None:
    # Pairs (pos, neg): 0.9>0.1, 0.9>0.5, 0.5=0.5 (half), 0.5>0.1 -> 3.5 / 4.
    assert auroc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(3.5 / 4)
    assert auroc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert auroc([1, 0, 1, 0], [3, 3, 3, 3]) == 0.5
    assert math.isnan(auroc([1, 1], [0.2, 0.3]))


def test_pearson_by_hand_and_undefined_cases() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = (0, 1, 2, 3), y = (0, 1, 1, 3): cov 4.5/4... computed by hand via deviations.
    x, y = np.array([0, 1, 2, 3.0]), np.array([0, 1, 1, 3.0])
    dx, dy = x - 1.5, y - 1.25
    assert pearson(x, y) == pytest.approx((dx @ dy) / math.sqrt((dx @ dx) * (dy @ dy)))
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # constant side
    assert math.isnan(pearson([1], [2]))


def test_mean_ci_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1234)
    trials, covered = 400, 0
    for seed in range(trials):
        sample = rng.normal(3.0, 2.0, size=100)
        ci = mean_ci(sample, seed=seed, resamples=1000)
        assert ci is not None
        covered += 3.0 in ci
    # Percentile bootstrap of a mean at n = 100 is close to nominal; the binomial
    # standard error of the estimate over 400 trials is about 1.1 points.
    assert 0.91 <= covered / trials <= 0.98


def test_bootstrap_ci_matches_the_analytic_interval_of_a_mean() -> None:
    sample = np.random.default_rng(7).normal(10.0, 3.0, size=400)
    ci = bootstrap_ci(lambda i: float(sample[i].mean()), len(sample), seed=0, resamples=2000)
    half = sps.t.ppf(0.975, len(sample) - 1) * sample.std(ddof=1) / math.sqrt(len(sample))
    assert ci is not None and ci.level == 0.95
    assert ci.lower == pytest.approx(sample.mean() - half, abs=0.12 * half)
    assert ci.upper == pytest.approx(sample.mean() + half, abs=0.12 * half)
    # The generic path and the vectorised mean agree.
    fast = mean_ci(sample, seed=0, resamples=2000)
    assert fast is not None and fast.lower == pytest.approx(ci.lower, abs=0.1 * half)


def test_bootstrap_is_reproducible_by_seed_and_respects_strata_and_clusters() -> None:
    labels = np.array([1] * 5 + [0] * 45)
    scores = np.random.default_rng(0).normal(size=50) + labels
    stat = lambda i: auroc(labels[i], scores[i])  # noqa: E731
    a = bootstrap_ci(stat, 50, seed=3, strata=labels, resamples=300)
    assert a == bootstrap_ci(stat, 50, seed=3, strata=labels, resamples=300)
    assert a != bootstrap_ci(stat, 50, seed=4, strata=labels, resamples=300)

    sizes = []
    bootstrap_ci(lambda i: sizes.append(int(labels[i].sum())) or 0.0, 50, strata=labels, resamples=50)
    assert set(sizes) == {5}  # each resample keeps the class sizes

    clusters = np.repeat(np.arange(10), 5)
    seen = []
    bootstrap_ci(lambda i: seen.append(i) or 0.0, 50, clusters=clusters, resamples=20)
    for idx in seen:  # whole clusters only
        assert len(idx) == 50 and all(np.bincount(clusters[idx], minlength=10) % 5 == 0)


def test_bootstrap_gives_no_interval_when_the_statistic_is_mostly_undefined() -> None:
    assert bootstrap_ci(lambda i: math.nan, 10) is None
    assert bootstrap_ci(lambda i: 1.0, 0) is None


def test_paired_difference() -> None:
    a = np.array([0.8, 0.7, 0.9, 0.6, 0.75, math.nan])
    b = np.array([0.6, 0.7, 0.5, 0.65, 0.55, 0.4])
    cmp = paired_difference(a, b, seed=0)
    d = a[:5] - b[:5]
    assert cmp.n == 5 and cmp.mean_difference == pytest.approx(d.mean())
    assert (cmp.wins, cmp.ties, cmp.losses) == (3, 1, 1)
    assert cmp.ci is not None and cmp.ci.lower <= d.mean() <= cmp.ci.upper
    assert 0 < cmp.p_value <= 1
    # A large consistent difference is significant; none at all is not.
    big = paired_difference(np.full(30, 1.0) + np.linspace(0, 0.1, 30), np.zeros(30), seed=0)
    assert big.p_value < 0.01 and big.wins == 30
    same = paired_difference(np.arange(10.0), np.arange(10.0))
    assert same.ties == 10 and same.p_value == pytest.approx(1.0)


def test_metrics_agree_with_scipy_and_sklearn_on_random_data() -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(5)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        y[:2] = [0, 1]
        s = np.round(rng.normal(size=60) + y, 1)  # rounding makes ties
        p = s > 0.5
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))
        assert balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p))
        assert f1(y, p) == pytest.approx(f1_score(y, p))
        x = rng.normal(size=60)
        assert pearson(x, s) == pytest.approx(sps.pearsonr(x, s)[0])


def test_pearson_treats_rounding_noise_as_constant() -> None:
    noisy = np.array([0.1, 0.1 + 1e-17, 1 * 0.1 / (0.9 + 0.1), 0.30000000000000004 - 0.2])
    assert math.isnan(pearson(noisy, [0.0, 1.0, 2.0, 3.0]))


def test_proportion_interval_does_not_collapse_at_the_edges() -> None:
    from sagex.scoring.stats import proportion_ci

    all_hits = proportion_ci([True] * 20)
    assert all_hits is not None and all_hits.upper == pytest.approx(1.0) and 0.80 < all_hits.lower < 0.86
    none = proportion_ci([False] * 20)
    assert none is not None and none.lower == pytest.approx(0.0) and 0.14 < none.upper < 0.20
    half = proportion_ci([True, False] * 50)  # Wilson, n = 100, p = 0.5: 0.404..0.596
    assert half is not None and half.lower == pytest.approx(0.4038, abs=1e-3) and half.upper == pytest.approx(
        0.5962, abs=1e-3)
