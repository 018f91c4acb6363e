"""Linear probes: class-balanced logistic regression on the residual stream at the
SAE's hook, one per concept, measured on test documents (AUROC, average
precision). A probe with AUROC below ``min_auroc`` is reported and not planted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sagex.activation.planted.concepts import AMBIGUOUS, POS, Concept
from sagex.activation.planted.data import Sample

MIN_AUROC = 0.9
MIN_POSITIVES = (20, 8)  # train, test


@dataclass(frozen=True)
class Probe:
    """``logit(x) = x @ weight + bias`` on raw hidden states; ``threshold`` is the
    logit above which the concept is called present (best F1 on train)."""

    concept: Concept
    weight: np.ndarray  # float32[d_model]
    bias: float
    threshold: float
    scale: float  # planted activation per logit unit above the threshold
    auroc: float
    average_precision: float
    train_positives: int
    test_positives: int
    test_negatives: int


@dataclass(frozen=True)
class ProbeReport:
    concept: str
    kind: str
    status: str  # "planted" | "weak" | "no_positives" | "too_few"
    reason: str
    auroc: float | None = None
    average_precision: float | None = None
    train_positives: int = 0
    test_positives: int = 0


def _stack(samples: Sequence[Sample], hidden: Sequence[np.ndarray], labels: Sequence[np.ndarray], split: str
           ) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for s, h, lab in zip(samples, hidden, labels, strict=True):
        if s.split != split:
            continue
        keep = lab != AMBIGUOUS
        xs.append(h[keep])
        ys.append(lab[keep] == POS)
    if not xs:
        return np.zeros((0, hidden[0].shape[1]), np.float32), np.zeros(0, bool)
    return np.concatenate(xs), np.concatenate(ys)


def fit(concept: Concept, samples: Sequence[Sample], hidden: Sequence[np.ndarray], labels: Sequence[np.ndarray],
        seed: int = 0, min_auroc: float = MIN_AUROC) -> tuple[Probe | None, ProbeReport]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    x_train, y_train = _stack(samples, hidden, labels, "train")
    x_test, y_test = _stack(samples, hidden, labels, "test")
    n_pos = int(y_train.sum()), int(y_test.sum())
    if sum(n_pos) == 0:
        return None, ProbeReport(concept.name, concept.kind, "no_positives",
                                 f"the labeller marked no token positive in {len(samples)} documents; check it "
                                 "(or add templates with positives)")
    if n_pos[0] < MIN_POSITIVES[0] or n_pos[1] < MIN_POSITIVES[1] or (~y_test).sum() == 0:
        return None, ProbeReport(concept.name, concept.kind, "too_few",
                                 f"{n_pos[0]} train / {n_pos[1]} test positives; need at least "
                                 f"{MIN_POSITIVES[0]} / {MIN_POSITIVES[1]} (more documents or templates)",
                                 train_positives=n_pos[0], test_positives=n_pos[1])
    mean = x_train.mean(0)
    std = x_train.std(0) + 1e-6
    model = LogisticRegression(class_weight="balanced", C=0.1, max_iter=2000, random_state=seed)
    model.fit((x_train - mean) / std, y_train)
    w_std = model.coef_[0].astype(np.float64)
    weight = w_std / std
    bias = float(model.intercept_[0] - (w_std * mean / std).sum())
    test_logit = x_test.astype(np.float64) @ weight + bias
    auroc = float(roc_auc_score(y_test, test_logit))
    ap = float(average_precision_score(y_test, test_logit))
    if auroc < min_auroc:
        return None, ProbeReport(concept.name, concept.kind, "weak",
                                 f"probe AUROC {auroc:.3f} < {min_auroc} on test documents: the model's residual "
                                 "stream at this hook does not carry the concept linearly", auroc, ap, *n_pos)
    train_logit = x_train.astype(np.float64) @ weight + bias
    precision, recall, cuts = precision_recall_curve(y_train, train_logit)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    threshold = float(cuts[int(np.argmax(f1))])
    above = train_logit[y_train & (train_logit > threshold)] - threshold
    scale = 5.0 / float(np.median(above)) if len(above) and np.median(above) > 0 else 1.0
    probe = Probe(concept, weight.astype(np.float32), bias, threshold, scale, auroc, ap, n_pos[0], n_pos[1],
                  int((~y_test).sum()))
    return probe, ProbeReport(concept.name, concept.kind, "planted", "", auroc, ap, *n_pos)
