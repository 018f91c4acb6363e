"""Fuzzing (delphi's FuzzingScorer, Neuronpedia's eleuther_fuzz): are the marked
tokens the ones the feature fires on, according to the explanation?

* Positives: held-out activating windows with every token at or above
  ``highlight_fraction`` (0.3) of that window's maximum marked ``<<like this>>``
  (adjacent marked tokens share one pair of marks).
* Negatives (delphi's "default" fuzzing): silent held-out windows with k random
  tokens marked, k = ceil(mean number of marked tokens per positive), by seed.
Prompting, read-out and metrics are in ``classifier``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sagex.remote.traces import Trace
from sagex.scoring.scorers.base import Meter, Scorer, ScorerOutput, ScoringInput, Toolkit, register
from sagex.scoring.scorers.classifier import ClassifierSettings, classification_metrics, judge

SYSTEM = (
    "You are checking an explanation of a feature of a language model. In each example text some tokens are "
    "marked <<like this>>. Decide from the explanation alone whether the marked tokens are where the feature "
    "activates. Answer with a JSON array of integers only."
)
QUESTION = "For each example: are the marked tokens the ones the feature, as explained, activates on?"


@dataclass(frozen=True)
class FuzzingSettings:
    highlight_fraction: float = 0.3  # of each window's maximum
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)

    def __post_init__(self) -> None:
        if not 0 < self.highlight_fraction <= 1:
            raise ValueError("fuzzing.highlight_fraction must be in (0, 1]")


def highlight(trace: Trace, marked: set[int]) -> str:
    """The window's text with runs of marked positions wrapped in << >> (special tokens dropped)."""
    out: list[str] = []
    open_run = False
    for i, token in enumerate(trace.tokens):
        if i in trace.special:
            continue
        if i in marked and not open_run:
            out.append("<<")
            open_run = True
        elif i not in marked and open_run:
            out.append(">>")
            open_run = False
        out.append(token)
    if open_run:
        out.append(">>")
    return "".join(out)


def active_positions(trace: Trace, fraction: float) -> set[int]:
    peak = trace.max_activation
    return {i for i in trace.content_positions if peak > 0 and trace.values[i] >= fraction * peak}


def fuzzed_examples(activating: list[Trace], silent: list[Trace], fraction: float, seed: int) -> list[str]:
    marks = [active_positions(t, fraction) for t in activating]
    # As delphi: negatives get k random marks, k = the mean count of *nonzero* tokens of
    # the activating examples (not of the above-threshold ones, which would mark too few).
    nonzero = [sum(1 for i in t.content_positions if t.values[i] > 0) for t in activating]
    k = max(1, math.ceil(np.mean(nonzero))) if nonzero else 1
    rng = np.random.default_rng([seed, 3])
    out = [highlight(t, m) for t, m in zip(activating, marks, strict=True)]
    for t in silent:
        positions = t.content_positions
        chosen: Sequence[int] = (rng.choice(positions, size=min(k, len(positions)), replace=False).tolist()
                                 if positions else [])
        out.append(highlight(t, {int(p) for p in chosen}))
    return out


class FuzzingScorer(Scorer):
    name = "fuzzing"

    def __init__(self, toolkit: Toolkit, settings: FuzzingSettings) -> None:
        self.toolkit = toolkit
        self.settings = settings

    async def score(self, task: ScoringInput, meter: Meter) -> ScorerOutput:
        llm = self.toolkit.need_llm(self.name)
        sample = await task.data.checked_heldout()
        examples = fuzzed_examples(list(sample.activating), list(sample.non_activating),
                                   self.settings.highlight_fraction, task.seed)
        judgements = await judge(
            self.toolkit, llm, meter, system=SYSTEM, question=QUESTION, explanation=task.explanation,
            examples=examples, labels=list(sample.labels), settings=self.settings.classifier, seed=task.seed,
        )
        metrics, details = classification_metrics(judgements, task.seed)
        return ScorerOutput(metrics, details)


@register("fuzzing", FuzzingSettings)
def _build(toolkit: Toolkit, settings: FuzzingSettings) -> FuzzingScorer:
    return FuzzingScorer(toolkit, settings)


__all__ = ["FuzzingScorer", "FuzzingSettings", "fuzzed_examples", "highlight"]
