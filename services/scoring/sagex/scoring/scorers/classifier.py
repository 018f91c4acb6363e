"""The shared core of the detection and fuzzing scorers (delphi's classifier
scorers): shuffled examples go to the LLM a few per prompt, the LLM answers one
0/1 per example, and the answers are scored against the true labels.

* Order: a seeded shuffle, so activating and silent examples mix in every prompt.
* Answer: a JSON array of k integers (1 = yes). With logprobs, P(yes) at each
  position is P("1") / (P("0") + P("1")) over the top alternatives, which gives
  AUROC; without them AUROC is left out, not guessed.
* An answer that cannot be read (wrong length after the re-ask, a non-0/1 entry)
  leaves those examples unanswered: they are counted, not scored as wrong.
* Metrics: balanced accuracy (TPR + TNR) / 2, F1, AUROC; each with a 95 %
  bootstrap interval that resamples within each class. n counts answered examples.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from sagex.llm import LLMBackend
from sagex.scoring.errors import ScorerFailed
from sagex.scoring.readout import read_array
from sagex.scoring.result import Metric
from sagex.scoring.scorers.base import Meter, Toolkit
from sagex.scoring.stats import auroc, balanced_accuracy, bootstrap_ci, f1

YES_NO = range(2)


@dataclass(frozen=True)
class ClassifierSettings:
    examples_per_prompt: int = 5
    logprobs: bool = True  # ask for logprobs (AUROC); endpoints without them still give accuracy and F1
    top_logprobs: int = 5
    attempts: int = 2  # calls per prompt when the answer has the wrong number of entries

    def __post_init__(self) -> None:
        if not 1 <= self.examples_per_prompt <= 20 or self.attempts < 1:
            raise ValueError("classifier: examples_per_prompt must be in 1..20 and attempts >= 1")


@dataclass(frozen=True)
class Judgement:
    label: bool
    prediction: bool | None  # None: unanswered
    probability: float | None  # P(yes), when logprobs were available


def _prompt(explanation: str, question: str, examples: Sequence[str]) -> str:
    listing = "\n\n".join(f"Example {i + 1}:\n{text}" for i, text in enumerate(examples))
    return (
        f"Explanation of the feature: {explanation}\n\n{listing}\n\n{question}\n"
        f"Reply with a JSON array of exactly {len(examples)} integers, the i-th for example i: 1 for yes, 0 for no."
    )


async def judge(
    toolkit: Toolkit, llm: LLMBackend, meter: Meter, *, system: str, question: str, explanation: str,
    examples: Sequence[str], labels: Sequence[bool], settings: ClassifierSettings, seed: int,
) -> list[Judgement]:
    """One judgement per example, in the order given."""
    order = np.random.default_rng([seed, 2]).permutation(len(examples))
    batches = [order[i : i + settings.examples_per_prompt] for i in range(0, len(order), settings.examples_per_prompt)]

    async def ask(batch: np.ndarray) -> list[tuple[bool | None, float | None]]:
        shown = [examples[i] for i in batch]
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": _prompt(explanation, question, shown)}]
        for _ in range(settings.attempts):
            completion = await toolkit.complete(llm, messages, max_tokens=4 * len(shown) + 16,
                                                top_logprobs=settings.top_logprobs if settings.logprobs else None)
            meter.add(completion.usage)
            entries = read_array(completion.text, completion.logprobs, YES_NO)
            if entries is not None and len(entries) == len(shown):
                return [(None if e.value is None else e.value == 1, e.probability(1)) for e in entries]
            got = "no JSON array" if entries is None else f"{len(entries)} entries"
            messages = [*messages, {"role": "assistant", "content": completion.text or "(no answer)"},
                        {"role": "user", "content": f"Your reply had {got}; there are {len(shown)} examples. "
                                                    f"Reply with a JSON array of exactly {len(shown)} integers."}]
        return [(None, None)] * len(shown)

    answers = await toolkit.gather_limited([functools.partial(ask, b) for b in batches])
    out: list[Judgement | None] = [None] * len(examples)
    for batch, batch_answers in zip(batches, answers, strict=True):
        for i, (prediction, probability) in zip(batch, batch_answers, strict=True):
            out[i] = Judgement(bool(labels[i]), prediction, probability if prediction is not None else None)
    return [j for j in out if j is not None]


def classification_metrics(judgements: Sequence[Judgement], seed: int) -> tuple[list[Metric], dict[str, int]]:
    answered = [j for j in judgements if j.prediction is not None]
    y = np.array([j.label for j in answered], bool)
    if len(answered) == 0 or y.all() or not y.any():
        raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                           f"the LLM answered {len(answered)} of {len(judgements)} examples, not both classes; "
                           "no accuracy can be computed (a stronger model is needed)")
    p = np.array([bool(j.prediction) for j in answered], bool)
    strata = y.astype(int)
    metrics = [
        Metric("balanced_accuracy", balanced_accuracy(y, p),
               bootstrap_ci(lambda i: balanced_accuracy(y[i], p[i]), len(y), seed=seed, strata=strata), len(y)),
        Metric("f1", f1(y, p), bootstrap_ci(lambda i: f1(y[i], p[i]), len(y), seed=seed, strata=strata), len(y)),
    ]
    with_prob = [j for j in answered if j.probability is not None]
    yp = np.array([j.label for j in with_prob], bool)
    if len(with_prob) == len(answered):
        scores = np.array([j.probability for j in with_prob], np.float64)
        metrics.append(Metric("auroc", auroc(yp, scores), bootstrap_ci(
            lambda i: auroc(yp[i], scores[i]), len(yp), seed=seed, strata=yp.astype(int)), len(yp)))
    details = {"examples": len(judgements), "unanswered": len(judgements) - len(answered),
               "positives": int(y.sum()), "negatives": int((~y).sum()), "with_probability": len(with_prob)}
    return metrics, details


__all__ = ["ClassifierSettings", "Judgement", "classification_metrics", "judge"]
