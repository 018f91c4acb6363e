"""Generative accuracy (SAGE), with the specificity and location checks SAGE lacked.

One LLM call writes ``n_texts`` texts that should make the feature fire, each with
the word or phrase where it should fire, plus a contrasting description (close
to the explanation but not covered by it) and ``n_texts`` texts for that. All run
through the activation service in one batch; a text's activation is its maximum
over content tokens (special tokens and position 0 excluded).

* success: max >= tau, tau = half the mean maximum of the feature's top-10
  exemplar-split windows (``heldout.Reference``).
* success_rate, mean_max_activation (matching texts); false_positive_rate
  (contrasting texts reaching tau); auroc (matching vs contrasting maxima);
  location_accuracy (successful matching texts whose peak token lies in the
  named target).
Rates and means get a 95 % percentile-bootstrap interval over texts, auroc one
that resamples within each group; n counts texts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sagex.remote.traces import Trace, normalize_token
from sagex.scoring.result import Metric
from sagex.scoring.scorers.base import Meter, Scorer, ScorerOutput, ScoringInput, Toolkit, register
from sagex.scoring.stats import auroc, bootstrap_ci, mean_ci, proportion_ci

SYSTEM = (
    "You write test texts for an explanation of a feature of a language model: texts that should make the "
    "feature activate, and contrasting texts that should not. Answer with one JSON object only."
)

_STR = {"type": "string"}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["matching", "contrast_description", "contrasting"],
    "properties": {
        "matching": {"type": "array", "items": {"type": "object", "required": ["text", "target"],
                                                "properties": {"text": _STR, "target": _STR}}},
        "contrast_description": _STR,
        "contrasting": {"type": "array", "items": _STR},
    },
}


@dataclass(frozen=True)
class GenerativeSettings:
    n_texts: int = 20  # matching texts, and as many contrasting ones
    max_text_chars: int = 300
    attempts: int = 3  # LLM calls when the answer is malformed or too short
    max_tokens: int | None = None  # output-token limit of the call; None: the LLM config's

    def __post_init__(self) -> None:
        if not 2 <= self.n_texts <= 100 or self.attempts < 1 or self.max_text_chars < 20:
            raise ValueError("generative: n_texts must be in 2..100, attempts >= 1, max_text_chars >= 20")

    @property
    def min_texts(self) -> int:
        return max(2, math.ceil(self.n_texts / 2))


@dataclass(frozen=True)
class Written:
    matching: list[tuple[str, str]]  # (text, target)
    contrast_description: str
    contrasting: list[str]


def prompt(explanation: str, n: int) -> str:
    return (
        f"Explanation of the feature: {explanation}\n\n"
        f"1. Write {n} diverse, natural English texts of 5 to 25 words. Each must clearly contain what the "
        "explanation describes. For each, name the exact word or phrase in it where the feature should activate "
        "most (its target); the target must not be the text's first word (the first token is not scored).\n"
        "2. Write a contrasting description: something close to the explanation that it does not cover.\n"
        f"3. Write {n} texts that fit the contrasting description: similar in topic and style to the first "
        "texts, but containing nothing the explanation describes.\n\n"
        'Reply as {"matching": [{"text": "...", "target": "..."}, ...], "contrast_description": "...", '
        '"contrasting": ["...", ...]}'
    )


def parse_written(obj: Any, settings: GenerativeSettings) -> Written:
    """Validate the LLM's answer; ValueError says what to fix (it goes back to the model)."""
    if not isinstance(obj, dict):
        raise ValueError("the answer must be a JSON object")

    def texts(items: Any, field: str) -> list[tuple[str, str]]:
        if not isinstance(items, list):
            raise ValueError(f'"{field}" must be a list')
        out, seen = [], set()
        for item in items:
            text, target = (item.get("text"), item.get("target", "")) if isinstance(item, dict) else (item, "")
            if not isinstance(text, str) or not text.strip() or len(text) > settings.max_text_chars:
                continue
            key = " ".join(text.lower().split())
            if key not in seen:
                seen.add(key)
                out.append((text.strip(), target.strip() if isinstance(target, str) else ""))
        if len(out) < settings.min_texts:
            raise ValueError(f'"{field}" has {len(out)} usable distinct texts; write {settings.n_texts}, each a '
                             f"non-empty string under {settings.max_text_chars} characters")
        return out[: settings.n_texts]

    matching = texts(obj.get("matching"), "matching")
    contrasting = [t for t, _ in texts(obj.get("contrasting"), "contrasting")]
    description = obj.get("contrast_description")
    return Written(matching, description.strip() if isinstance(description, str) else "", contrasting)


def on_target(trace: Trace, target: str) -> bool:
    """Whether the peak falls on the named target: the peak token is part of one of
    the target's words (a sub-word piece of it counts; a stray letter does not)."""
    peak = normalize_token(trace.peak_token)
    words = [w.strip(".,;:!?\"'()") for w in target.lower().split()]
    if not peak or not any(words):
        return False
    piece_ok = len(peak) >= 2 or peak.isdigit()  # "s" is in half the words of English
    return any(peak == w or (piece_ok and peak in w) or (w and w in peak) for w in words)


class GenerativeScorer(Scorer):
    name = "generative"

    def __init__(self, toolkit: Toolkit, settings: GenerativeSettings) -> None:
        self.toolkit = toolkit
        self.settings = settings

    async def score(self, task: ScoringInput, meter: Meter) -> ScorerOutput:
        llm = self.toolkit.need_llm(self.name)
        reference = await task.data.reference()
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": prompt(task.explanation, self.settings.n_texts)}]
        written, usage = await llm.ask_json(messages, lambda obj: parse_written(obj, self.settings), schema=SCHEMA,
                                            schema_name="test_texts", attempts=self.settings.attempts,
                                            max_tokens=self.settings.max_tokens)
        meter.add(usage)
        texts = [t for t, _ in written.matching] + written.contrasting
        data = task.data
        traces = await self.toolkit.activation.run(data.sae_id, data.feature_id, texts)
        matched, contrast = traces[: len(written.matching)], traces[len(written.matching):]
        m = np.array([t.max_activation for t in matched], np.float64)
        c = np.array([t.max_activation for t in contrast], np.float64)
        hit, fired = m >= reference.tau, c >= reference.tau
        seed = task.seed
        both = np.concatenate([m, c])
        groups = np.array([1] * len(m) + [0] * len(c))
        metrics = [
            Metric("success_rate", float(hit.mean()), proportion_ci(hit), len(m)),
            Metric("mean_max_activation", float(m.mean()), mean_ci(m, seed=seed), len(m)),
            Metric("false_positive_rate", float(fired.mean()), proportion_ci(fired), len(c)),
            Metric("auroc", auroc(groups.astype(bool), both),
                   bootstrap_ci(lambda i: auroc(groups[i].astype(bool), both[i]), len(both), seed=seed,
                                strata=groups), len(both)),
        ]
        located = np.array([on_target(t, target) for t, (_, target), h in
                            zip(matched, written.matching, hit, strict=True) if h and target], bool)
        if len(located):
            metrics.append(Metric("location_accuracy", float(located.mean()), proportion_ci(located), len(located)))
        details: dict[str, float | int | str] = {
            "tau": reference.tau, "global_max": reference.global_max, "reference_windows": reference.n_top,
            "context_tokens": reference.context_tokens, "matching_texts": len(m), "contrasting_texts": len(c),
            "contrast_description": written.contrast_description,
        }
        return ScorerOutput(metrics, details)


@register("generative", GenerativeSettings)
def _build(toolkit: Toolkit, settings: GenerativeSettings) -> GenerativeScorer:
    return GenerativeScorer(toolkit, settings)


__all__ = ["GenerativeScorer", "GenerativeSettings", "Written", "on_target", "parse_written", "prompt"]
