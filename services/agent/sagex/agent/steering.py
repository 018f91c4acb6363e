"""Output-side evidence for the agent: the logit lens as a hypothesis source and a
steering probe that tests a predicted effect.

A steering probe states, before it runs, what amplifying the feature should make the
model write (an effect in words and the tokens expected to appear). The activation
service continues neutral prompts with the feature added at a strength set by a target
KL, and without (SteerGenerate). The probe is judged like an input probe, by a rule
fixed in advance: it holds when the predicted tokens appear in more steered than
unsteered continuations (a word match, case-insensitive). Any policy may propose one
(``Policy.predict_steering`` is optional); the explainer runs it and adds the result
to the conclusion as "what it does", next to what activates the feature.

Servers without steering answer FAILED_PRECONDITION: the probe is then skipped and
the conclusion says so; the logit lens alone is still reported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import structlog

from sagex.agent.state import Conclusion, EvidenceItem
from sagex.remote.activation import ActivationClient, ActivationUnavailable, LensTokens, SteerOutcome

log = structlog.get_logger(__name__)

# GA25's neutral prompts and two more of the same kind.
NEUTRAL_PROMPTS = ("The explanation is simple:", "I think", "We", "In my opinion,", "One day,")
LENS_K = 20


@dataclass(frozen=True)
class SteeringPrediction:
    """What amplifying the feature should do, stated before the probe runs."""

    effect: str  # e.g. "the model writes about cooking"
    tokens: tuple[str, ...]  # words expected to appear in steered text
    hypothesis_id: int = 0  # the hypothesis it tests (0: the logit lens itself)
    source: str = "logit lens"


@dataclass(frozen=True)
class SteeringProbe:
    prediction: SteeringPrediction
    outcome: SteerOutcome
    steered_hits: int  # steered continuations containing a predicted token
    unsteered_hits: int
    matched: tuple[str, ...]  # predicted tokens seen in steered text

    @property
    def n(self) -> int:
        return len(self.outcome.completions)

    @property
    def as_expected(self) -> bool:
        return self.steered_hits > self.unsteered_hits


def lens_words(lens: LensTokens | None, k: int = 8) -> tuple[str, ...]:
    """Promoted tokens that read as words (byte pieces and punctuation dropped), deduplicated."""
    if lens is None:
        return ()
    out: list[str] = []
    for text, _ in lens.promoted:
        w = text.strip().lower()
        if len(w) >= 2 and w.isalpha() and w not in out:
            out.append(w)
        if len(out) >= k:
            break
    return tuple(out)


def lens_prediction(lens: LensTokens | None) -> SteeringPrediction | None:
    """The logit lens as a hypothesis about the output: amplifying the feature makes
    the model write the tokens it promotes."""
    words = lens_words(lens)
    if not words:
        return None
    shown = ", ".join(repr(w) for w in words[:5])
    return SteeringPrediction(f"amplifying it makes the model write tokens such as {shown}", words)


def _contains(text: str, words: Sequence[str]) -> set[str]:
    found = set(re.findall(r"[a-z]+", text.lower()))
    return {w for w in words if w in found}


def judge(prediction: SteeringPrediction, outcome: SteerOutcome) -> SteeringProbe:
    steered = [_contains(c.steered, prediction.tokens) for c in outcome.completions]
    clean = [_contains(c.unsteered, prediction.tokens) for c in outcome.completions]
    matched = tuple(sorted(set().union(*steered))) if steered else ()
    return SteeringProbe(prediction, outcome, sum(bool(s) for s in steered), sum(bool(c) for c in clean), matched)


async def effects(activation: ActivationClient, sae_id: str, feature_id: int) -> LensTokens | None:
    """The feature's logit lens, or None when the activation service cannot give it."""
    try:
        return (await activation.effects(sae_id, [feature_id], LENS_K)).get(feature_id)
    except grpc.aio.AioRpcError as exc:
        log.info("logit_lens_unavailable", feature=feature_id, code=exc.code().name)
        return None
    except ActivationUnavailable as exc:  # the output side may still be loading: explain without it
        log.info("logit_lens_unavailable", feature=feature_id, reason=str(exc))
        return None


async def run_probe(activation: ActivationClient, sae_id: str, feature_id: int, prediction: SteeringPrediction,
                    target_kl: float, max_new_tokens: int = 16, timeout_s: float = 600.0) -> SteeringProbe | str:
    """Steer the neutral prompts at ``target_kl`` and judge; a string says why it could not run."""
    try:
        outcome = await activation.steer(sae_id, feature_id, NEUTRAL_PROMPTS, target_kl=target_kl,
                                         max_new_tokens=max_new_tokens, timeout_s=timeout_s)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return "the activation service does not steer (start it with --steering)"
        raise
    return judge(prediction, outcome)


def with_output_side(conclusion: Conclusion, lens: LensTokens | None, probe: SteeringProbe | str | None
                     ) -> Conclusion:
    """The conclusion plus what the feature does to the output, each claim with its evidence."""
    parts: list[str] = []
    evidence = list(conclusion.evidence)
    words = lens_words(lens, k=6)
    if words:
        parts.append("What it does: its decoder direction promotes " + ", ".join(repr(w) for w in words)
                     + " (logit lens).")
    if isinstance(probe, SteeringProbe):
        o = probe.outcome
        verdict = "confirmed" if probe.as_expected else "not confirmed"
        parts.append(
            f"Steering test ({probe.prediction.source}: {probe.prediction.effect}) {verdict}: at KL {o.mean_kl:.2f} "
            f"(α={o.strength:.3g}) predicted tokens appeared in {probe.steered_hits}/{probe.n} steered vs "
            f"{probe.unsteered_hits}/{probe.n} unsteered continuations"
            + (f" ({', '.join(probe.matched)})." if probe.matched else "."))
        evidence += [EvidenceItem(f"steered {c.prompt!r} -> {c.steered!r} (unsteered: {c.unsteered!r})", c.kl,
                                  probe.prediction.hypothesis_id, bool(_contains(c.steered, probe.prediction.tokens)))
                     for c in o.completions]
    elif isinstance(probe, str):  # why there is no steering test: logged, not part of the explanation
        log.info("no_steering_probe", reason=probe)
    if not parts:
        return conclusion
    return Conclusion(f"{conclusion.description} {' '.join(parts)}".strip(), conclusion.labels, evidence)
