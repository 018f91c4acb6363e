"""Intervention (causal, output side): does the explanation tell steered text from unsteered?

Neutral prompts are continued twice by the activation service (SteerGenerate), with
the feature's decoder direction added at the last prompt token and every generated
token, and without. The strength is searched per feature so that the mean KL of
the first generated token's distribution is ``target_kl`` nats (causal.md §4.1:
calibrating equalises *how much* the output moves, so the score compares *what*
moved). A judge then sees the explanation and each (steered, unsteered) pair in a
random order and says which one was steered:

* ``llm`` judge (when an LLM is configured): one call with every pair, blind labels A/B;
* ``embedding`` judge (otherwise): the continuation closer to the explanation
  (all-MiniLM-L6-v2 cosine, continuation only, so the prompt cannot leak into both).

Metrics: ``accuracy`` (pairs judged right; chance 0.5; Wilson 95 % interval; n counts
informative pairs, i.e. the two continuations differ), and for the embedding judge
``auroc`` of the similarity, steered vs unsteered continuations. Details carry the KL
reached, the strength, the sample sizes and a control: the same judge and explanation
on a random other feature steered to the same KL (it should sit near chance).
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from sagex.remote.activation import SteerOutcome
from sagex.scoring.embedder import EmbedderUnavailable
from sagex.scoring.errors import ScorerFailed
from sagex.scoring.result import Metric
from sagex.scoring.scorers.base import Meter, Scorer, ScorerOutput, ScoringInput, Toolkit, register
from sagex.scoring.stats import auroc, bootstrap_ci, proportion_ci

# Neutral prefixes: GA25's three, and more of the same kind (no topic of their own).
NEUTRAL_PROMPTS = (
    "The explanation is simple:", "I think", "We", "In my opinion,", "Here is what happened:", "The next thing",
    "She said that", "It is important to", "From my experience,", "The best part is", "Today I want to talk about",
    "Let me tell you about", "The main reason is", "One day,", "They decided to", "This is a story about",
    "The answer is", "Most people", "He wrote", "At the end of the day,",
)

SYSTEM = ("You judge an explanation of a feature of a language model. When the feature is amplified, the model "
          "writes differently. For each pair of continuations of the same prompt, say which one was written with the "
          "feature amplified, using the explanation. Answer with one JSON object only.")
SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["answers"],
    "properties": {"answers": {"type": "array", "items": {"type": "string", "enum": ["A", "B"]}}},
}


@dataclass(frozen=True)
class InterventionSettings:
    target_kl: float = 1.0  # nats; PA24's base configuration, PR151's default
    n_prompts: int = 20
    max_new_tokens: int = 16
    judge: str = "auto"  # auto: llm when configured, else embedding
    control: bool = True  # also judge a random other feature at the same KL

    def __post_init__(self) -> None:
        if not 0 < self.target_kl <= 10 or not 2 <= self.n_prompts <= len(NEUTRAL_PROMPTS):
            raise ValueError(f"intervention: target_kl must be in (0, 10], n_prompts in 2..{len(NEUTRAL_PROMPTS)}")
        if self.judge not in ("auto", "llm", "embedding") or not 1 <= self.max_new_tokens <= 64:
            raise ValueError("intervention: judge must be auto, llm or embedding; max_new_tokens 1..64")


def judge_prompt(explanation: str, pairs: list[tuple[str, str, str]]) -> str:
    lines = [f"Explanation of the feature: {explanation}", ""]
    for i, (prompt, a, b) in enumerate(pairs, 1):
        # JSON strings: newlines and quotes in continuations cannot break the layout.
        lines += [f"Pair {i}. Prompt: {json.dumps(prompt)}", f"  A: {json.dumps(a)}", f"  B: {json.dumps(b)}"]
    lines += ["", f'Reply as {{"answers": ["A" or "B", ...]}} with exactly {len(pairs)} answers, in pair order.']
    return "\n".join(lines)


def parse_answers(obj: Any, n: int) -> list[str]:
    answers = obj.get("answers") if isinstance(obj, dict) else None
    if not isinstance(answers, list) or len(answers) != n or any(a not in ("A", "B") for a in answers):
        raise ValueError(f'"answers" must be a list of exactly {n} strings, each "A" or "B"')
    return answers


class InterventionScorer(Scorer):
    name = "intervention"

    CACHE_SIZE = 256  # steered generations kept per scorer (feature, seed)

    def __init__(self, toolkit: Toolkit, settings: InterventionSettings) -> None:
        self.toolkit = toolkit
        self.settings = settings
        # Every explanation of a feature is judged on the same generations (a paired
        # comparison, and one steering run instead of one per explanation).
        self._cache: OrderedDict[tuple[str, int, int], SteerOutcome] = OrderedDict()

    def _judge_kind(self) -> str:
        if self.settings.judge != "auto":
            return self.settings.judge
        llm = self.toolkit.llm
        return "llm" if llm is not None and llm.config.model else "embedding"

    async def _steer(self, task: ScoringInput, feature: int) -> SteerOutcome:
        s = self.settings
        key = (task.data.sae_id, feature, task.seed)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        outcome = await self.toolkit.activation.steer(
            task.data.sae_id, feature, NEUTRAL_PROMPTS[: s.n_prompts], target_kl=s.target_kl,
            max_new_tokens=s.max_new_tokens, seed=task.seed)
        self._cache[key] = outcome
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return outcome

    async def _judge(self, kind: str, explanation: str, outcome: SteerOutcome, rng: random.Random, meter: Meter,
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per informative pair, whether the judge picked the steered text; for the embedding
        judge also the similarities (steered texts, then unsteered)."""
        pairs = [c for c in outcome.completions if c.steered != c.unsteered]
        if not pairs:
            return np.zeros(0, bool), None
        if kind == "embedding":
            embedder = self.toolkit.embedder
            if embedder is None:
                raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                                   "the intervention scorer needs an LLM or an embedder; neither is configured")
            try:
                v = await embedder.embed([explanation, *[c.steered for c in pairs], *[c.unsteered for c in pairs]])
            except EmbedderUnavailable as e:
                raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION, str(e)) from e
            sim = (v[1:] @ v[0]).astype(np.float64)
            return sim[: len(pairs)] > sim[len(pairs):], sim
        llm = self.toolkit.need_llm(self.name)
        flips = [rng.random() < 0.5 for _ in pairs]  # True: the steered text is B
        shown = [(c.prompt, c.unsteered, c.steered) if f else (c.prompt, c.steered, c.unsteered)
                 for c, f in zip(pairs, flips, strict=True)]
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": judge_prompt(explanation, shown)}]
        answers, usage = await llm.ask_json(messages, lambda obj: parse_answers(obj, len(shown)), schema=SCHEMA,
                                            schema_name="steered_choice")
        meter.add(usage)
        return np.array([(a == "B") == f for a, f in zip(answers, flips, strict=True)], bool), None

    async def score(self, task: ScoringInput, meter: Meter) -> ScorerOutput:
        kind = self._judge_kind()
        if kind == "llm":
            self.toolkit.need_llm(self.name)
        rng = random.Random(task.seed * 1_000_003 + task.data.feature_id)
        outcome = await self._steer(task, task.data.feature_id)
        right, sim = await self._judge(kind, task.explanation, outcome, rng, meter)
        n = len(right)
        metrics = [Metric("accuracy", float(right.mean()) if n else float("nan"), proportion_ci(right), n)]
        if kind == "embedding":
            labels = np.array([True] * n + [False] * n)
            sim = np.zeros(0) if sim is None else sim
            ci = bootstrap_ci(lambda i: auroc(labels[i], sim[i]), 2 * n, seed=task.seed,
                              strata=labels.astype(int)) if n else None
            metrics.append(Metric("auroc", auroc(labels, sim) if n else float("nan"), ci, 2 * n))
        details: dict[str, float | int | str] = {
            "judge": kind if kind == "llm" else f"embedding ({self.toolkit.embedder.name})",  # type: ignore[union-attr]
            "target_kl": self.settings.target_kl, "mean_kl": round(outcome.mean_kl, 4),
            "strength": round(outcome.strength, 4), "target_reached": int(outcome.target_reached),
            "prompts": len(outcome.completions), "identical_pairs": len(outcome.completions) - n,
            "max_new_tokens": self.settings.max_new_tokens,
        }
        if self.settings.control:
            sae = await self.toolkit.activation.sae(task.data.sae_id)
            if sae is not None and sae.d_sae > 1:
                other = rng.randrange(sae.d_sae - 1)
                other += other >= task.data.feature_id
                control = await self._steer(task, other)
                c_right, _ = await self._judge(kind, task.explanation, control, rng, meter)
                details.update(control_feature=other, control_mean_kl=round(control.mean_kl, 4),
                               control_accuracy=round(float(c_right.mean()), 4) if len(c_right) else "undefined")
        return ScorerOutput(metrics, details)


@register("intervention", InterventionSettings)
def _build(toolkit: Toolkit, settings: InterventionSettings) -> InterventionScorer:
    return InterventionScorer(toolkit, settings)


__all__ = ["NEUTRAL_PROMPTS", "InterventionScorer", "InterventionSettings", "judge_prompt", "parse_answers"]
