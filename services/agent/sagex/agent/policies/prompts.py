"""Prompts built from the structured state, one per step. Each carries only what
its step needs (a hypothesis's own probes, not the others'), never a chat history."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from sagex.agent.state import FeatureView, Hypothesis, Probe, RunState
from sagex.remote.traces import Trace

SYSTEM = (
    "You are a careful scientist explaining one feature of a sparse autoencoder trained on a language model's "
    "activations. You form testable hypotheses, design short probe texts that can tell them apart, and judge "
    "them only from measured activations. Answer with one JSON object matching the requested schema, nothing else."
)

SNIPPET_RADIUS = 6


def _tok(token: str) -> str:
    return token.replace("\n", "\\n")


def marked(trace: Trace, radius: int | None = SNIPPET_RADIUS) -> str:
    """Tokens around the peak, each active token followed by its activation: ``word(3.1)``."""
    positions = range(len(trace.tokens)) if radius is None else range(
        max(0, trace.argmax - radius), min(len(trace.tokens), trace.argmax + radius + 1))
    out = []
    for i in positions:
        if i in trace.special:
            continue
        v = float(trace.values[i])
        out.append(f"{_tok(trace.tokens[i])}({v:.1f})" if v > 0 else _tok(trace.tokens[i]))
    return "".join(out)


def scale_line(view: FeatureView) -> str:
    return (f"Feature {view.feature_id} of SAE {view.sae_id}: maximum activation {view.scale:.2f}; an activation "
            f">= {view.fire_threshold:.2f} ({view.fire_fraction:.0%} of the maximum) counts as firing.")


def exemplars(view: FeatureView, limit: int = 10) -> str:
    seen: set[str] = set()
    lines = []
    for t in view.exemplars.top:
        snippet = marked(t)
        if snippet in seen:  # exemplars repeat contexts; show each once
            continue
        seen.add(snippet)
        lines.append(f"- max {t.max_activation:.2f} on {_tok(t.peak_token)!r}: {snippet}")
        if len(lines) >= limit:
            break
    for lower, upper, traces in view.exemplars.bands:
        for t in traces[:1]:
            lines.append(f"- weaker ({lower:.1f}-{upper:.1f}), max {t.max_activation:.2f}: {marked(t)}")
    for t in view.exemplars.non_activating[:2]:
        lines.append(f"- silent: {_tok(t.text[:120])}")
    return "\n".join(lines)


def output_side(view: FeatureView) -> str:
    """The logit lens, when the activation service gave it (empty otherwise)."""
    if view.lens is None or not view.lens.promoted:
        return ""
    up = ", ".join(repr(t) for t, _ in view.lens.promoted[:12])
    down = ", ".join(repr(t) for t, _ in view.lens.suppressed[:8])
    return (f"\nOutput side (logit lens: its decoder direction through the final norm and unembedding; direct effect "
            f"only, may be noisy):\n- promotes: {up}\n- suppresses: {down}\n")


def probe_line(p: Probe, detail: bool) -> str:
    outcome = "fired" if p.fired else "silent"
    verdict = "as expected" if p.as_expected else "NOT as expected"
    line = (f"- probe {p.id} (round {p.round}) expected {p.draft.expected.value}, {outcome} at max "
            f"{p.activation:.2f} on {_tok(p.trace.peak_token)!r}, {verdict}: {p.draft.text!r}")
    if detail:
        line += f"\n    per token: {marked(p.trace, radius=None)}"
    return line


def hypothesis_block(state: RunState, h: Hypothesis, detail_ids: AbstractSet[int] = frozenset(), last: int = 8) -> str:
    kind = "control (predicts the feature stays silent)" if h.is_control else "hypothesis"
    lines = [f"H{h.id} [{kind}, status {h.status.value}]: {h.text}"]
    if h.history:
        lines.append(f"  earlier versions: {' | '.join(h.history)}")
    probes = state.probes_of(h.id)[-last:]
    lines += [probe_line(p, p.id in detail_ids) for p in probes] or ["  (no probes yet)"]
    return "\n".join(lines)


def _findings(state: RunState) -> str:
    if not state.findings:
        return ""
    return ("A symbolic explainer (tagger, WordNet and structure predicates, no LLM) already tested this feature "
            f"and was not confident:\n{state.findings}\nUse what it measured; do not repeat what it refuted.\n\n")


def hypothesize(state: RunState, count: int) -> str:
    v = state.view
    return f"""{scale_line(v)}
It fires in {v.stats.window_frequency:.1%} of corpus windows ({v.stats.firing_frequency:.2%} of tokens).

Top-activating corpus examples (active tokens followed by their activation):
{exemplars(v)}
{output_side(v)}
{_findings(state)}Task: write exactly {count} competing, testable hypotheses about what makes this feature \
fire. Make them differ
(the token itself, its context, a broader category, a structural position...). Exactly one must be a control:
a claim about text on which the feature should NOT fire, with "is_control": true.

JSON schema: {{"observations": string, "hypotheses": [{{"text": string, "is_control": boolean}}]}}"""


def design(state: RunState, h: Hypothesis, max_probes: int) -> str:
    v = state.view
    top = "\n".join(f"- {marked(t)}" for t in v.exemplars.top[:3])
    return f"""{scale_line(v)}
Three top examples: 
{top}

{hypothesis_block(state, h)}

Task: design 1 to {max_probes} new probe texts (one short sentence each, under 300 characters) that test H{h.id}.
Use minimal pairs where you can: the same sentence with and without the ingredient the hypothesis names.
For each, predict whether the feature "fires" or stays "silent" if H{h.id} is right. Do not repeat earlier probes.

JSON schema: {{"probes": [{{"text": string, "expected": "fires" | "silent", "rationale": string}}]}}"""


def judge(state: RunState, h: Hypothesis, new: Sequence[Probe]) -> str:
    return f"""{scale_line(state.view)}

{hypothesis_block(state, h, detail_ids={p.id for p in new})}

Task: judge H{h.id} from all its probes above. CONFIRMED: at least two probes behaved as predicted and none
contradicts it. REFUTED: the probes contradict it. REFINED: partly right; give a corrected hypothesis text in
"refined_text" that fits every probe. PENDING: not enough evidence yet. Cite probe numbers in "reason".

JSON schema: {{"status": "CONFIRMED" | "REFUTED" | "REFINED" | "PENDING", "reason": string, "refined_text": string}}"""


def review(state: RunState, probes_left: dict[int, int]) -> str:
    blocks = "\n\n".join(hypothesis_block(state, h, last=4) for h in state.hypotheses)
    room = ", ".join(f"H{hid}: {n}" for hid, n in sorted(probes_left.items()))
    return f"""{scale_line(state.view)}

{blocks}

Task: review the verdicts. If a verdict could be wrong or a behaviour is untested, propose at most 2 extra probes
per hypothesis that could overturn it (probes left: {room}). Propose none if the evidence is adequate.

JSON schema: {{"assessment": string, "probes": [{{"hypothesis_id": integer, "text": string,
"expected": "fires" | "silent", "rationale": string}}]}}"""


def conclude(state: RunState) -> str:
    blocks = "\n\n".join(hypothesis_block(state, h, last=6) for h in state.hypotheses)
    return f"""{scale_line(state.view)}

Top examples:
{exemplars(state.view, limit=5)}
{output_side(state.view)}
{blocks}

Task: write the final explanation from this evidence only.
- "description": 2-3 specific sentences: what makes the feature fire, with activation ranges, and where it stays silent.
- "labels": one label per distinct behaviour supported by the probes (several only if the feature is polysemantic;
  merge hypotheses about the same behaviour). Each has a short "name" and a standalone "description".
- "evidence": the probes that decide it: probe number, hypothesis number, and whether it supports the hypothesis.

JSON schema: {{"description": string, "labels": [{{"name": string, "description": string}}],
"evidence": [{{"probe_id": integer, "hypothesis_id": integer, "supports": boolean}}]}}"""


def predict_steering(state: RunState) -> str:
    blocks = "\n\n".join(hypothesis_block(state, h, last=3) for h in state.hypotheses if not h.is_control)
    return f"""{scale_line(state.view)}
{output_side(state.view)}
{blocks}

Task: predict what the model writes when this feature is amplified (its decoder direction added while the model
continues neutral prompts such as "I think"). Use the output side above and what makes the feature fire.
- "effect": one sentence, e.g. "the model writes about cooking".
- "tokens": 3 to 10 lowercase words you expect in the amplified continuations and not in normal ones.

JSON schema: {{"effect": string, "tokens": [string]}}"""
