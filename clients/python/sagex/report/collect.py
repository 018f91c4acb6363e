"""Gathering a report through the SDK: explanations from the agent, exemplars
from the activation service, scores from the scoring service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from sagex.report.model import FeatureReport, Report
from sagex.sdk import Comparison, Explanation, Sage, SageError
from sagex.sdk.types import FeatureEffects, SteerResult

# GA25's neutral prompts: steering them shows what a feature writes without its context.
NEUTRAL_PROMPTS = ("The explanation is simple:", "I think", "We")


def latest_explanations(sage: Sage, sae: str, features: Sequence[int]) -> list[Explanation]:
    """The newest explanation of each feature, in the order given; a feature the
    agent never explained raises ValueError naming it."""
    newest: dict[int, Explanation] = {}
    for ex in sage.agent.list(sae, features):  # newest first
        newest.setdefault(ex.feature_id, ex)
    missing = [f for f in features if f not in newest]
    if missing:
        raise ValueError(f"no explanation of feature(s) {', '.join(map(str, missing))} on SAE {sae!r}; "
                         f"run `sage explain {sae} {','.join(map(str, missing))} --watch` first")
    return [newest[f] for f in features]


def collect(sage: Sage, explanations: Sequence[Explanation], *, scorers: Sequence[str] = ("embedding",),
            seed: int = 0, top_k: int = 6, with_exemplars: bool = True, comparison: Comparison | None = None,
            title: str = "SAGE explanations", notes: Sequence[str] = (),
            on_feature: Callable[[FeatureReport], None] | None = None, steer_target_kl: float | None = None) -> Report:
    """One report of ``explanations`` (all of one SAE). Empty ``scorers`` skips scoring.

    A feature whose scoring fails keeps its explanation and records why, so one
    bad feature never loses the rest of the report. With exemplars, the logit lens
    is shown too; ``steer_target_kl`` also steers neutral prompts at that KL (needs
    an activation server with steering on)."""
    if not explanations:
        raise ValueError("nothing to report: give at least one explanation")
    saes = {ex.sae_id for ex in explanations}
    if len(saes) != 1:
        raise ValueError(f"one report covers one SAE; got {sorted(saes)}")
    sae = saes.pop()
    mined = {}
    if with_exemplars:
        mined = {fx.feature_id: fx for fx in sage.activation.exemplars(
            sae, sorted({ex.feature_id for ex in explanations}), top_k=top_k)}
    effects: dict[int, FeatureEffects] = {}
    notes = list(notes)
    if with_exemplars:
        try:
            effects = {fx.feature_id: fx for fx in sage.activation.effects(
                sae, sorted({ex.feature_id for ex in explanations}), top_k=10)}
        except SageError as exc:
            notes.append(f"no logit lens: {exc.message}")
    features = []
    for ex in explanations:
        steering: SteerResult | None = None
        if steer_target_kl is not None:
            try:
                steering = sage.activation.steer(sae, ex.feature_id, NEUTRAL_PROMPTS, target_kl=steer_target_kl)
            except SageError as exc:
                if not any(n.startswith("no steering") for n in notes):
                    notes.append(f"no steering: {exc.message}")
        scores: tuple = ()
        why = ""
        if ex.failed:
            why = f"not scored: the explanation failed ({ex.error_code})"
        elif scorers and ex.description:
            try:
                scores = tuple(sage.scoring.score(sae, ex.feature_id, ex.description, scorers, seed))
            except SageError as exc:
                why = f"not scored: {exc.message}"
        elif scorers:
            why = "not scored: the explanation has no description"
        fr = FeatureReport(ex, mined.get(ex.feature_id), scores, why, effects.get(ex.feature_id), steering)
        if on_feature is not None:
            on_feature(fr)
        features.append(fr)
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    return Report(title, sae, created, tuple(features), comparison, tuple(notes))
