"""Detection (delphi's DetectionScorer, Neuronpedia's eleuther_recall): given the
explanation, does the feature fire anywhere in this text?

Examples are the shared held-out sample as plain text, with no highlighting:
activating windows from every quantile band (positives) and silent windows
(negatives). Prompting, read-out and metrics are in ``classifier``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sagex.scoring.scorers.base import Meter, Scorer, ScorerOutput, ScoringInput, Toolkit, register
from sagex.scoring.scorers.classifier import ClassifierSettings, classification_metrics, judge

SYSTEM = (
    "You are checking an explanation of a feature of a language model. For each example text, decide from the "
    "explanation alone whether the feature activates anywhere in it. Answer with a JSON array of integers only."
)
QUESTION = "For each example: does the feature, as explained, activate anywhere in the text?"


@dataclass(frozen=True)
class DetectionSettings:
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)


class DetectionScorer(Scorer):
    name = "detection"

    def __init__(self, toolkit: Toolkit, settings: DetectionSettings) -> None:
        self.toolkit = toolkit
        self.settings = settings

    async def score(self, task: ScoringInput, meter: Meter) -> ScorerOutput:
        llm = self.toolkit.need_llm(self.name)
        sample = await task.data.checked_heldout()
        judgements = await judge(
            self.toolkit, llm, meter, system=SYSTEM, question=QUESTION, explanation=task.explanation,
            examples=sample.texts, labels=list(sample.labels), settings=self.settings.classifier, seed=task.seed,
        )
        metrics, details = classification_metrics(judgements, task.seed)
        return ScorerOutput(metrics, details)


@register("detection", DetectionSettings)
def _build(toolkit: Toolkit, settings: DetectionSettings) -> DetectionScorer:
    return DetectionScorer(toolkit, settings)


__all__ = ["DetectionScorer", "DetectionSettings"]
