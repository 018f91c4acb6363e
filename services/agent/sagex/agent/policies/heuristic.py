"""The heuristic policy: the SAGE loop with no LLM.

Hypotheses come from exemplar statistics (the peak token, the word it sits in,
its neighbour, its character class); probes are minimal pairs (a context with
and without the candidate word), the word in fresh contexts, other members of
its class, and neutral controls; verdicts come from the measured activations
against the feature's own scale.
"""

from __future__ import annotations

from collections.abc import Sequence

from sagex.agent import probetexts
from sagex.agent.profile import Profile, char_class, profile
from sagex.agent.state import (
    Conclusion,
    EvidenceItem,
    Expect,
    Hypothesis,
    Label,
    Probe,
    ProbeDraft,
    RunState,
    Status,
    Verdict,
)
from sagex.agent.steering import SteeringPrediction, lens_prediction
from sagex.llm.backend import Usage
from sagex.remote.traces import normalize_token

PROBES_PER_ROUND = 3
SECOND_TOKEN_SHARE = 0.2  # a second peak token this common is a second behaviour
CONTEXT_SHARE = 0.5  # a preceding token this common is a candidate context


def _show(text: str, width: int = 60) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


class HeuristicPolicy:
    name = "heuristic"

    def __init__(self) -> None:
        self._profile: Profile | None = None

    def usage(self) -> Usage:
        return Usage()

    def _prof(self, state: RunState) -> Profile:
        if self._profile is None:
            self._profile = profile(state.view.exemplars.top, state.view.fire_threshold)
        return self._profile

    # -- hypotheses ---------------------------------------------------------------

    async def hypothesize(self, state: RunState, count: int) -> list[Hypothesis]:
        prof = self._prof(state)
        top = prof.top
        drafts: list[tuple[str, dict[str, str]]] = []
        if top is not None:
            for cand in [top, *(c for c in prof.tokens[1:3] if c.share >= SECOND_TOKEN_SHARE)]:
                drafts.append((f"Fires on the token {cand.token!r} (as in {cand.word.strip()!r}) in any context.",
                               {"kind": "token", "token": cand.token, "word": cand.word}))
            prev = prof.dominant_prev(CONTEXT_SHARE)
            if prev is not None:
                drafts.append((f"Fires on {top.token!r} only right after {prev!r}; the context, not the token, "
                               "drives it.", {"kind": "context", "token": top.token, "word": top.word, "prev": prev}))
            cls, n = prof.classes.most_common(1)[0]
            family = [c.word for c in prof.tokens[:4]]
            if len(family) >= 3 and cls.endswith("word"):
                shown = ", ".join(repr(w.strip()) for w in family)
                drafts.append((f"Fires on a family of related words ({shown}) in contexts like the exemplars'.",
                               {"kind": "family", "token": top.token, "words": "\t".join(family)}))
            else:
                drafts.append((f"Fires on {cls} tokens in general, not only on {top.token!r}.",
                               {"kind": "class", "class": cls, "token": top.token}))
            if top.word.strip() != top.token.strip() and len(top.token.strip()) >= 2:
                drafts.append((f"Fires on any word containing the piece {top.token.strip()!r}.",
                               {"kind": "piece", "token": top.token}))
        avoid = top.token if top is not None else ""
        control = (f"Does not fire on ordinary text without {avoid!r}." if avoid
                   else "Does not fire on ordinary text.", {"kind": "control", "token": avoid})
        drafts = drafts[: count - 1]
        while len(drafts) < count - 1:  # too little structure: context-snippet hypotheses
            i = len(drafts)
            ctx = prof.contexts[i % len(prof.contexts)] if prof.contexts else ""
            drafts.append((f"Fires at the end of contexts like {_show(ctx)!r}.", {"kind": "snippet", "context": ctx}))
        drafts.append(control)
        return [Hypothesis(i + 1, text, facts["kind"] == "control", facts=facts) for i, (text, facts) in
                enumerate(drafts)]

    # -- probes -------------------------------------------------------------------

    def _drafts_for(self, state: RunState, h: Hypothesis, salt: int) -> list[ProbeDraft]:
        prof = self._prof(state)
        f = h.facts
        kind = f["kind"]
        out: list[tuple[str, Expect, str]] = []
        word = f.get("word") or f.get("token", "")
        if kind == "token":
            out += [(t, Expect.FIRES, f"{word!r} in a new context") for t in probetexts.in_frames(word, 1, salt)]
            out += [(t, Expect.FIRES, f"{word!r} moved into another exemplar's context")
                    for t in self._transplants(prof, f["token"], word, 1, salt)]
            ctx = self._context_with(prof, f["token"], salt)
            if ctx:
                swapped = probetexts.substitute(ctx, f["token"], char_class(f["token"]), salt)
                if swapped != ctx:
                    out.append((swapped, Expect.SILENT, f"exemplar context with {f['token']!r} swapped out"))
        elif kind == "context":
            prev = f["prev"]
            out.append((probetexts.FRAMES[salt % len(probetexts.FRAMES)][0] + prev + f["token"] + ".",
                        Expect.FIRES, f"{prev!r} then {f['token']!r}"))
            out += [(t, Expect.SILENT, f"{f['token']!r} without {prev!r} before it")
                    for t in probetexts.in_frames(f["token"], 1, salt + 3) if prev not in t]
            out.append((probetexts.FRAMES[(salt + 1) % len(probetexts.FRAMES)][0] + prev + " weather.",
                        Expect.SILENT, f"{prev!r} followed by another word"))
        elif kind == "class":
            members = [m for m in probetexts.CLASS_MEMBERS.get(f["class"], [])
                       if m.strip().lower() != f["token"].strip().lower()]
            for i in range(2):
                if members:
                    m = members[(salt * 2 + i) % len(members)]
                    out += [(t, Expect.FIRES, f"another {f['class']}: {m!r}")
                            for t in probetexts.in_frames(m, 1, salt + i)]
        elif kind == "family":
            words = f["words"].split("\t")
            for i in range(2):
                w = words[(salt + i) % len(words)]
                moved = self._transplants(prof, w, w, 1, salt + i)
                out += [(t, Expect.FIRES, f"{w.strip()!r} in a sibling's context") for t in moved]
            out += [(t, Expect.FIRES, f"{words[salt % len(words)].strip()!r} in a new context")
                    for t in probetexts.in_frames(words[salt % len(words)], 1, salt)]
        elif kind == "piece":
            piece = f["token"].strip()
            for w in (piece + "s", "un" + piece):
                out += [(t, Expect.FIRES, f"{piece!r} inside another word") for t in probetexts.in_frames(w, 1, salt)]
        elif kind == "snippet":
            ctx = f["context"]
            out.append((ctx, Expect.FIRES, "the exemplar context itself"))
            out.append((ctx[: max(1, len(ctx) // 2)], Expect.SILENT, "the context cut before its end"))
        else:  # control
            token = f.get("token", "")
            out += [(t, Expect.SILENT, "neutral text") for t in probetexts.neutral(2, salt, avoid=token)]
            negatives = [t for t in state.view.exemplars.non_activating if not token or token not in t.text]
            if negatives:
                t = negatives[salt % len(negatives)]
                out.append((t.text, Expect.SILENT, "corpus text where the feature is silent"))
        return [ProbeDraft(h.id, text, expect, why) for text, expect, why in out if text.strip()]

    @staticmethod
    def _transplants(prof: Profile, token: str, word: str, count: int, salt: int) -> list[str]:
        """Contexts of exemplars that peak on other words, with ``word`` put in place
        of their peak word: a natural sentence that differs in one word."""
        hosts = [(c, peak) for c, peak in zip(prof.contexts, prof.peaks, strict=True)
                 if peak.strip().lower() != token.strip().lower() and peak.strip()]
        out = []
        for i in range(min(count, len(hosts))):
            ctx, peak = hosts[(salt + i) % len(hosts)]
            moved = probetexts.substitute(ctx, peak, "", 0, replacement=probetexts.as_word(word.strip()))
            if moved != ctx:
                out.append(moved)
        return out

    @staticmethod
    def _context_with(prof: Profile, token: str, salt: int) -> str:
        hits = [c for c in prof.contexts if c.endswith(token)]
        return hits[salt % len(hits)] if hits else ""

    async def design(self, state: RunState, hypotheses: Sequence[Hypothesis], probes_left: dict[int, int]) -> list[
            ProbeDraft]:
        out = []
        for h in hypotheses:
            drafts = self._drafts_for(state, h, salt=state.round)
            out += drafts[: min(PROBES_PER_ROUND, probes_left.get(h.id, 0))]
        return out

    # -- verdicts -----------------------------------------------------------------

    async def judge(self, state: RunState, hypotheses: Sequence[Hypothesis], new: Sequence[Probe]) -> list[Verdict]:
        verdicts = []
        for h in hypotheses:
            probes = state.probes_of(h.id)
            ok = [p for p in probes if p.as_expected]
            bad = [p for p in probes if not p.as_expected]
            cited = "; ".join(f"{_show(p.draft.text, 40)!r} → {p.activation:.2f} ({'fired' if p.fired else 'silent'}, "
                              f"expected {p.draft.expected.value})" for p in probes[-4:])
            summary = (f"{len(ok)}/{len(probes)} probes as expected "
                       f"(fires at ≥ {state.view.fire_threshold:.2f}): {cited}")
            if len(probes) >= 2 and not bad:
                verdicts.append(Verdict(h.id, Status.CONFIRMED, summary))
            elif len(probes) >= 2 and len(ok) * 2 < len(probes):
                verdicts.append(Verdict(h.id, Status.REFUTED, summary))
            elif bad:
                verdicts.append(Verdict(h.id, Status.REFINED, summary, self._refine(h, bad, probes)))
            else:
                verdicts.append(Verdict(h.id, Status.PENDING, summary))
        return verdicts

    @staticmethod
    def _refine(h: Hypothesis, bad: Sequence[Probe], probes: Sequence[Probe]) -> str:
        silent_misses = [p for p in bad if p.draft.expected is Expect.FIRES]
        hits = [p.trace for p in probes if p.fired and p.draft.expected is Expect.FIRES]
        before = {t.tokens[t.argmax - 1] for t in hits if t.argmax > 0}
        if h.facts.get("kind") in ("token", "family") and silent_misses and len(before) == 1:
            # Every hit shared its preceding token: test that context next.
            prev = before.pop()
            h.facts.update(kind="context", prev=prev, token=h.facts["token"])
            return f"Fires on {h.facts['token']!r} only right after {prev!r} (as in {_show(hits[0].text, 40)!r})."
        if h.facts.get("kind") == "token" and silent_misses:
            return (f"Fires on {h.facts['token']!r} in some contexts but not all "
                    f"(silent on {_show(silent_misses[0].draft.text, 40)!r}).")
        if h.facts.get("kind") == "control":
            return f"{h.text} Exception: it fired on {_show(bad[0].draft.text, 40)!r}."
        return h.text

    # -- review and conclusion ----------------------------------------------------

    async def review(self, state: RunState, probes_left: dict[int, int]) -> list[ProbeDraft]:
        """Probe each confirmed hypothesis once more in frames it has not met."""
        out = []
        for h in state.hypotheses:
            if h.status is Status.CONFIRMED and probes_left.get(h.id, 0) > 0:
                out += self._drafts_for(state, h, salt=state.round + 5)[: min(2, probes_left[h.id])]
        return out

    async def conclude(self, state: RunState) -> Conclusion:
        view = state.view
        confirmed = [h for h in state.hypotheses if not h.is_control and self._holds(state, h)]
        labels: list[Label] = []
        # Hypotheses about one behaviour merge into one label: a confirmed family covers
        # its member words, and a context reading is more specific than the bare token.
        covered = {normalize_token(w) for h in confirmed if h.facts.get("kind") == "family"
                   for w in h.facts["words"].split("\t")}
        seen_tokens: set[str] = set()
        rank = {"family": 0, "context": 1}
        for h in sorted(confirmed, key=lambda h: rank.get(h.facts.get("kind", ""), 2)):
            kind, token = h.facts.get("kind"), normalize_token(h.facts.get("token", ""))
            if (kind in ("token", "context", "piece") and token
                    and (token in seen_tokens or any(token in w for w in covered))):
                continue
            seen_tokens.add(token)
            labels.append(Label(self._label_name(h), h.text))
        tested = {h.id for h in state.hypotheses if not h.is_control}
        fired = [p.activation for p in state.probes if p.fired and p.draft.hypothesis_id in tested]
        silent = [p.activation for p in state.probes if not p.fired]
        control = next((h for h in state.hypotheses if h.is_control), None)
        parts = []
        if len(labels) == 1:
            parts.append(labels[0].description)
        elif labels:
            parts.append(f"Polysemantic: {len(labels)} distinct behaviours. "
                         + " ".join(f"({i}) {lbl.description}" for i, lbl in enumerate(labels, 1)))
        else:
            prof = self._prof(state)
            peaks = ", ".join(repr(c.token) for c in prof.tokens[:3])
            parts.append(f"Inconclusive: no hypothesis survived its probes; top exemplars peak on {peaks}.")
        if fired:
            parts.append(f"Probes that fired reached {min(fired):.2f}–{max(fired):.2f} "
                         f"({min(fired) / view.scale:.0%}–{max(fired) / view.scale:.0%} of its max {view.scale:.2f}).")
        if control is not None and silent:
            verdict = "held" if control.status is Status.CONFIRMED else f"was {control.status.value.lower()}"
            parts.append(f"The control ({control.text}) {verdict}; silent probes stayed ≤ {max(silent):.2f}.")
        evidence = [EvidenceItem(p.draft.text, p.activation, p.draft.hypothesis_id, p.as_expected)
                    for p in state.probes]
        return Conclusion(" ".join(parts), labels, evidence)

    @staticmethod
    def _holds(state: RunState, h: Hypothesis) -> bool:
        """Confirmed, or refined with at least two thirds of its probes as expected."""
        if h.status is Status.CONFIRMED:
            return True
        probes = state.probes_of(h.id)
        return h.status is Status.REFINED and len(probes) >= 3 and \
            sum(p.as_expected for p in probes) * 3 >= 2 * len(probes)

    @staticmethod
    def _label_name(h: Hypothesis) -> str:
        f = h.facts
        kind = f.get("kind")
        token = f.get("token", "").strip() or f.get("token", "")
        if kind == "token":
            return f"token {token!r}"
        if kind == "context":
            return f"{token!r} after {f['prev'].strip()!r}"
        if kind == "class":
            return f"{f['class']} tokens"
        if kind == "family":
            return "words like " + ", ".join(repr(w.strip()) for w in f["words"].split("\t")[:3])
        if kind == "piece":
            return f"words containing {token!r}"
        return _show(h.text, 40)

    async def predict_steering(self, state: RunState) -> SteeringPrediction | None:
        """The logit lens as the output-side hypothesis, for the steering probe to test."""
        return lens_prediction(state.view.lens)
