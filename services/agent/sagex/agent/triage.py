"""Triage: features that need no agent. Dead, near-always-on, single-token and
purely positional features get a cheap, labelled result without LLM spend.
Single-token and positional claims are checked with a few probes first; a claim
that fails its check goes to the full loop instead."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sagex.agent import probetexts
from sagex.agent.profile import profile
from sagex.agent.state import Expect, FeatureView, Label, Probe, ProbeDraft


@dataclass(frozen=True)
class TriageConfig:
    enabled: bool = True
    # Fires on more than this share of all tokens. Token share, not window share: a
    # feature for "." or " the" is in most windows and still one specific thing.
    dense_firing_frequency: float = 0.3
    single_token_share: float = 0.9  # of top exemplars peaking on one token
    positional_share: float = 0.9  # of top exemplars peaking at one position, on varied tokens
    min_exemplars: int = 5
    # Allow single-token labels without sibling probes (only when no tagger is wired in).
    unchecked_tokens: bool = True

    def problems(self) -> list[str]:
        out = []
        for name in ("dense_firing_frequency", "single_token_share", "positional_share"):
            if not 0 < getattr(self, name) <= 1:
                out.append(f"triage.{name}: must be in (0, 1]")
        if self.min_exemplars < 2:
            out.append("triage.min_exemplars: must be >= 2")
        return out


@dataclass(frozen=True)
class TriageResult:
    kind: str  # "dead" | "dense" | "single_token" | "positional"
    description: str
    labels: list[Label]
    checks: list[ProbeDraft]  # verification probes; every one must behave as expected
    peak_position: int | None = None  # positional claims: where the checks must peak

    def verified(self, probes: list[Probe]) -> bool:
        if not all(p.as_expected for p in probes):
            return False
        if self.peak_position is not None:
            return all(p.trace.argmax == self.peak_position for p in probes if p.draft.expected is Expect.FIRES)
        return True


# Probes that swap a token for other members of its best class (e.g. "January" for
# "March"): a single-token claim stands only if the feature stays silent on them.
Siblings = Callable[[FeatureView, str], list[ProbeDraft]]


def triage(view: FeatureView, config: TriageConfig, siblings: Siblings | None = None) -> TriageResult | None:
    stats, ex = view.stats, view.exemplars
    if view.scale <= 0 or not ex.top:
        return TriageResult(
            "dead", f"Dead feature: it never fired on {ex.total_windows} windows of the exemplar corpus.",
            [Label("dead", "never activates on the exemplar corpus")], [],
        )
    if stats.firing_frequency > config.dense_firing_frequency:
        return TriageResult(
            "dense",
            f"Near-always-on feature: active in {stats.window_frequency:.0%} of corpus windows and "
            f"{stats.firing_frequency:.0%} of tokens (max {view.scale:.2f}); it marks text in general, "
            "not a specific concept.",
            [Label("dense", f"active on {stats.firing_frequency:.0%} of tokens")], [],
        )
    if len(ex.top) < config.min_exemplars:
        return None
    prof = profile(ex.top, view.fire_threshold)
    top = prof.top
    sibling_checks = siblings(view, top.token) if siblings is not None and top is not None else []
    # Without class members to contrast with, a token label is not claimed here: the loop decides.
    if (top is not None and top.share >= config.single_token_share
            and (sibling_checks or not top.token.strip() or siblings is None and config.unchecked_tokens)):
        word = top.word if top.token.strip() else top.token
        checks = [ProbeDraft(0, text, Expect.FIRES, f"{word!r} in a new context")
                  for text in probetexts.in_frames(word, 2, salt=0)]
        checks += [ProbeDraft(0, text, Expect.SILENT, f"control without {word!r}")
                   for text in probetexts.neutral(1, salt=0, avoid=top.token)]
        checks += sibling_checks
        return TriageResult(
            "single_token",
            f"Single-token feature: fires on the token {top.token!r} (as in {word!r}); {top.share:.0%} of the top "
            f"exemplars peak on it, up to {view.scale:.2f}, and it stays below {view.fire_threshold:.2f} without it.",
            [Label(f"token {top.token.strip() or top.token!r}", f"the token {top.token!r}")], checks,
        )
    position, share = prof.dominant_position()
    if share >= config.positional_share and len(prof.tokens) >= 3:
        checks = [ProbeDraft(0, text, Expect.FIRES, f"peak expected at position {position}")
                  for text in probetexts.neutral(2, salt=1)]
        return TriageResult(
            "positional",
            f"Positional feature: peaks at token position {position} in {share:.0%} of the top exemplars, "
            f"whatever the token ({len(prof.tokens)} different tokens).",
            [Label(f"position {position}", f"the token at position {position} of a text")], checks, position,
        )
    return None
