"""The symbolic policy: the SAGE loop with no LLM, over a library of predicates.

Every predicate of the library (lexical, grammar, meaning, spelling, structure,
context, and conjunctions of two) is scored against the exemplars, the quantile
bands and the silent windows at the feature's firing threshold; the best distinct
ones become hypotheses. Each is tested with texts the tagger confirms make it true
(minimal pairs, unseen class members) or false; a hypothesis whose members stay
silent is narrowed (a more specific predicate), one whose non-members fire is
widened (a broader one). The conclusion names the surviving predicate in plain
words, with a confidence from the probes' agreement."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sagex.agent.policies.base import StepFailed
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
from sagex.agent.symbolic import names
from sagex.agent.symbolic.probes import SIBLING, probe_texts, sibling_probes
from sagex.agent.symbolic.resources import ResourceMissing, serial
from sagex.agent.symbolic.scoring import Evidence, Scored, candidates, gather, merit, score
from sagex.agent.symbolic.tagging import tag, token_spans
from sagex.llm.backend import Usage
from sagex.remote.traces import Trace

TRUE_PER_ROUND = 2
FALSE_PER_ROUND = 2
F1_FLOOR = 0.3  # below this no predicate explains the exemplars
CONFIRM_AGREEMENT = 0.75
REFINE_KEEPS = 0.75  # a refinement must keep this share of the current reading's F1 on the exemplars
MERGE_OVERLAP = 0.5  # a second label must cover firing tokens the first does not
SAME_READING = 0.9  # hits overlap (Jaccard) at which two candidates of one kind are one reading
SEPARATES = 0.9  # a narrowing key holds on this share of the reading's firing exemplar tokens
SEPARATES_SILENT = 2 / 3  # ... and is absent from this share of its members that stayed silent
# Kinds of key that qualify a reading when its silent members show what it lacks.
SEPARATORS = ("spell:", "cap:", "morph:", "tag:", "prev:", "after:", "in:", "at:", "suffix:", "prefix:")
WORD_KEYS = ("word:", "lemma:", "stem:", "tok:")


def activation_at(p: Probe) -> float:
    """The probe's activation where its prediction is about (its draft's focus), else anywhere.
    An exemplar context with one word swapped may fire elsewhere for its own reasons; the
    pair tests the swapped word."""
    span = p.draft.focus
    if span is None:
        return p.activation
    text, spans = token_spans(p.trace.tokens, p.trace.special)
    inside = [i for i in p.trace.content_positions if spans[i][0] < span[1] and span[0] < spans[i][1]]
    if text != p.draft.text or not inside:  # the tokens do not spell the text: read it whole
        return p.activation
    return max(float(p.trace.values[i]) for i in inside)


def fired(p: Probe) -> bool:
    """Whether a probe fired where its prediction is about, at the exemplars' firing threshold.
    (Half that threshold let fresh members fire, but on a fresh build with 30 random
    directions it confirmed a reading for 8 of them where the full threshold did for 5.)"""
    a = activation_at(p)
    return a > 0 and a >= p.fire_threshold


def as_expected(p: Probe) -> bool:
    return fired(p) == (p.draft.expected is Expect.FIRES)


def _focus_keys(p: Probe) -> frozenset[str]:
    """The predicate keys of the words at a probe's focus."""
    assert p.draft.focus is not None
    tagged = tag(p.draft.text)
    return frozenset().union(*(tagged.words[i].keys for i in tagged.words_in(*p.draft.focus)))


def _overlap(a: frozenset[int], b: frozenset[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def keys_of(h: Hypothesis) -> tuple[str, ...]:
    return tuple(h.facts["keys"].split("\t")) if h.facts.get("keys") else ()


def balanced(probes: Sequence[Probe]) -> float:
    """Share of probes as expected, members and non-members weighted alike: a reading is
    judged on how well it predicts both firing and silence, whatever the mix of probes
    its generators could build (non-members are easy to find, members of a class less so)."""
    groups = [[p for p in probes if p.draft.expected is e] for e in (Expect.FIRES, Expect.SILENT)]
    rates = [sum(as_expected(p) for p in g) / len(g) for g in groups if g]
    return sum(rates) / len(rates) if rates else 0.0


def agreement(probes: Sequence[Probe]) -> float:
    """Share of probes as expected, pulled toward 1/2 when there are few."""
    return (sum(as_expected(p) for p in probes) + 0.5) / (len(probes) + 1)


class SymbolicPolicy:
    name = "symbolic"

    def __init__(self) -> None:
        self._ev: Evidence | None = None
        self._cands: list[Scored] = []
        self.best: Scored | None = None  # the predicate of the first label, once concluded
        self.best_confirmed = False

    def usage(self) -> Usage:
        return Usage()

    async def _evidence(self, state: RunState) -> Evidence:
        if self._ev is None:
            ex = state.view.exemplars
            others = [t for _, _, ts in ex.bands for t in ts] + list(ex.non_activating)
            try:
                self._ev = await asyncio.to_thread(serial, gather, ex.top, others, state.view.fire_threshold)
                self._cands = await asyncio.to_thread(serial, candidates, self._ev)
            except ResourceMissing as exc:
                raise StepFailed("hypothesize", str(exc)) from None
        return self._ev

    # -- hypotheses ---------------------------------------------------------------

    @staticmethod
    def _text(s: Scored) -> str:
        return (f"Fires on {names.conjunction_name(s.keys)} (precision {s.precision:.0%}, recall {s.recall:.0%} "
                "on the exemplar windows).")

    @staticmethod
    def _facts(s: Scored) -> dict[str, str]:
        return {"keys": "\t".join(s.keys), "f1": f"{s.f1:.4f}", "precision": f"{s.precision:.4f}",
                "recall": f"{s.recall:.4f}"}

    async def hypothesize(self, state: RunState, count: int) -> list[Hypothesis]:
        await self._evidence(state)
        # Names read WordNet, which serves one thread at a time: off the event loop, in turn.
        return await asyncio.to_thread(serial, self._hypothesize, count)

    def _hypothesize(self, count: int) -> list[Hypothesis]:
        chosen: list[Scored] = []
        for c in self._cands:
            if len(chosen) >= count - 1:
                break
            # One slot per reading: a candidate of the same kind that covers nearly the same firing
            # tokens ("time period", "fundamental quantity", "words for times") is the same claim.
            same = [o for o in chosen if _overlap(o.hits, c.hits) >= SAME_READING
                    and names.kind(o.keys[0]) == names.kind(c.keys[0])]
            if not same and c.tp > 0:
                chosen.append(c)
        # A simpler competitor: when every choice is a conjunction, the best single predicate
        # is tested too (the probes, not the small sample, decide between them).
        single = next((c for c in self._cands if len(c.keys) == 1 and c.tp > 0), None)
        if chosen and single is not None and all(len(c.keys) > 1 for c in chosen):
            chosen = [*chosen[: count - 2], single] if len(chosen) >= count - 1 else [*chosen, single]
        hyps = [Hypothesis(i + 1, self._text(s), False, facts=self._facts(s)) for i, s in enumerate(chosen)]
        while len(hyps) < count - 1:  # too little structure: weaker readings of the top candidate's class
            i = len(hyps)
            hyps.append(Hypothesis(i + 1, "Fires on no predicate of the library (the exemplars share none).", False,
                                   facts={"keys": "", "f1": "0"}))
        best = chosen[0].keys if chosen else ()
        control = (f"Silent on text where {names.conjunction_name(best)} holds nowhere." if best
                   else "Silent on ordinary text.")
        hyps.append(Hypothesis(count, control, True, facts={"keys": "\t".join(best), "control": "1"}))
        return hyps

    # -- probes -------------------------------------------------------------------

    def _drafts(self, state: RunState, h: Hypothesis, salt: int, budget: int) -> list[ProbeDraft]:
        ev = self._ev
        keys = keys_of(h)
        if ev is None or not keys:
            return []
        seen = set(ev.peak_words)
        n_true = 0 if h.is_control else TRUE_PER_ROUND
        n_false = FALSE_PER_ROUND + (1 if h.is_control else 0)
        siblings = [] if h.is_control else self._siblings(h.id, keys, salt)
        trues, falses = probe_texts(keys, ev.contexts, seen, salt, n_true, n_false - len(siblings))
        out = [ProbeDraft(h.id, t.text, Expect.FIRES, t.why, t.focus) for t in trues]
        out += siblings + [ProbeDraft(h.id, t.text, Expect.SILENT, t.why, t.focus) for t in falses]
        return out[:budget]

    def _siblings(self, hid: int, keys: tuple[str, ...], salt: int) -> list[ProbeDraft]:
        """For a one-word reading ("the word 'blue'"): an exemplar with its word swapped for
        another member of the word's class, expected silent. Only a feature that stays silent
        on its siblings earns a single-word label; one that fires on them is widened to the class."""
        if self._ev is None or len(keys) != 1 or not keys[0].startswith(("word:", "lemma:")):
            return []
        value = keys[0].split(":", 1)[1]
        ctxs = [c for c in self._ev.contexts if c.word.strip().lower() == value]
        if keys[0].startswith("lemma:"):
            ctxs = ctxs or list(self._ev.contexts)
        for i in range(len(ctxs)):
            c = ctxs[(salt + i) % len(ctxs)]
            for text, member, key in sibling_probes(c, 1 + salt % 2)[salt % 2:]:
                return [ProbeDraft(hid, text, Expect.SILENT, f"{c.word.strip()!r} swapped for {member!r}, {SIBLING} "
                                                            f"{names.name(key)}", c.swapped_span(member))]
        return []

    async def design(self, state: RunState, hypotheses: Sequence[Hypothesis], probes_left: dict[int, int]) -> list[
            ProbeDraft]:
        await self._evidence(state)
        out: list[ProbeDraft] = []
        for h in hypotheses:
            left = probes_left.get(h.id, 0)
            out += await asyncio.to_thread(serial, self._drafts, state, h, state.round, min(left, 4))
        return out

    # -- verdicts -----------------------------------------------------------------

    def _refined(self, h: Hypothesis, members_silent: bool, probes: Sequence[Probe] = ()) -> Scored | None:
        """A narrower predicate when members stayed silent, a broader one when
        non-members fired: the best-scoring candidate that covers a subset
        (narrower) or a superset (broader) of the firing tokens it covers."""
        ev = self._ev
        keys = keys_of(h)
        if ev is None or not keys:
            return None
        cur = score(keys, ev)
        tried = {tuple(k.split("\t")) for k in [h.facts.get("keys", "")] + h.facts.get("tried", "").split("|") if k}
        pool = [c for c in self._cands if c.keys not in tried]
        if members_silent:
            pool = [c for c in pool if c.hits <= cur.hits and c.precision >= cur.precision]
        else:
            pool = [c for c in pool if c.hits >= cur.hits and c.keys != keys]
        if members_silent and (split := self._separating(cur, probes)) is not None:
            pool.insert(0, split)
        # A probe or two against a reading the exemplars support far better than any
        # refinement of it are not reason enough to trade it: it keeps being tested.
        pool = [c for c in pool if c.f1 >= REFINE_KEEPS * cur.f1]
        return pool[0] if pool else None

    def _separating(self, cur: Scored, probes: Sequence[Probe]) -> Scored | None:
        """The reading narrowed by what its silent members lack: a key that holds on nearly all
        of its firing exemplar tokens and on every member probe that fired, and on most of
        those that stayed silent not ("cardinal numbers" whose digit members stayed silent:
        "... written in letters"). The exemplars alone may not tell the two readings apart."""
        ev = self._ev
        if ev is None or len(cur.keys) != 1 or not cur.hits or cur.keys[0].startswith(WORD_KEYS):
            return None  # a word's reading is narrowed by its context, not by its spelling
        members = [p for p in probes if p.draft.focus is not None and p.draft.expected is Expect.FIRES
                   and "member" in p.draft.rationale]
        silent = [_focus_keys(p) for p in members if not fired(p)]
        loud = [_focus_keys(p) for p in members if fired(p)]
        if not silent:
            return None
        counts: dict[str, int] = {}
        for i in cur.hits:
            for k in ev.firing[i]:
                counts[k] = counts.get(k, 0) + 1
        # Absent from most silent members (one may have failed for its own reasons), present on
        # every member that fired.
        keys = [k for k, n in counts.items() if n >= SEPARATES * len(cur.hits) and k != cur.keys[0]
                and k.startswith(SEPARATORS) and sum(k not in f for f in silent) >= SEPARATES_SILENT * len(silent)
                and all(k in f for f in loud)]
        scored = sorted((score((cur.keys[0], k), ev) for k in keys), key=lambda c: -c.f1)
        return scored[0] if scored else None

    async def judge(self, state: RunState, hypotheses: Sequence[Hypothesis], new: Sequence[Probe]) -> list[Verdict]:
        return await asyncio.to_thread(serial, self._judge, state, hypotheses)

    def _judge(self, state: RunState, hypotheses: Sequence[Hypothesis]) -> list[Verdict]:
        verdicts = []
        for h in hypotheses:
            probes = self._current_probes(state, h)  # a refined reading is judged on its own probes
            ok = sum(as_expected(p) for p in probes)
            fires = [p for p in probes if p.draft.expected is Expect.FIRES]
            silent_members = [p for p in fires if not fired(p)]
            loud = [p for p in probes if p.draft.expected is Expect.SILENT and fired(p)]
            summary = (f"{ok}/{len(probes)} probes as expected (fires at ≥ {state.view.fire_threshold:.2f}); "
                       + "; ".join(f"{p.draft.text[:40]!r} → {activation_at(p):.2f} ({p.draft.rationale})"
                                   for p in probes[-3:]))
            if not probes:
                verdicts.append(Verdict(h.id, Status.REFUTED, "no probe could be built that makes it true or false"))
                continue
            rate = balanced(probes)
            # A one-word reading whose class siblings fire is wrong however its other probes went:
            # the feature is wider than the word (the rule for single-token labels).
            loud_siblings = [] if h.is_control else [p for p in loud if SIBLING in p.draft.rationale]
            if loud_siblings:
                loud, silent_members = loud_siblings, []
            # Confirmed early only on two probes or more each way: one member that fired is a thin
            # reed for a reading (a noise direction fires on some of anything).
            both = h.is_control or (len(fires) >= 2 and len(probes) - len(fires) >= 2)
            held = rate >= CONFIRM_AGREEMENT and (h.is_control or len(fires) > len(silent_members))
            if len(probes) >= 3 and both and held and not loud_siblings:
                verdicts.append(Verdict(h.id, Status.CONFIRMED, summary))
                continue
            if h.is_control:
                verdicts.append(Verdict(h.id, Status.REFUTED if len(probes) >= 3 else Status.PENDING, summary))
                continue
            # Nothing to refine when every probe went as predicted (too few yet to confirm it).
            better = (self._refined(h, bool(silent_members) and len(silent_members) >= len(loud), probes)
                      if silent_members or loud else None)
            if loud_siblings and (better is None or h.status is Status.REFINED):
                verdicts.append(Verdict(h.id, Status.REFUTED, f"{summary}. Other members of its class fire too."))
                continue
            if better is not None and h.status is not Status.REFINED:
                h.facts["tried"] = "|".join(filter(None, [h.facts.get("tried", ""), h.facts["keys"]]))
                h.facts.update(self._facts(better))
                way = "narrowed" if silent_members else "widened"
                verdicts.append(Verdict(h.id, Status.REFINED, f"{summary}. {way.capitalize()}.", self._text(better)))
            elif len(probes) >= 3 and rate < 0.5:
                verdicts.append(Verdict(h.id, Status.REFUTED, summary))
            elif len(probes) >= 6:
                verdicts.append(Verdict(h.id, Status.REFUTED if rate < CONFIRM_AGREEMENT else Status.CONFIRMED,
                                        summary))
            else:
                verdicts.append(Verdict(h.id, Status.PENDING, summary))
        return verdicts

    async def review(self, state: RunState, probes_left: dict[int, int]) -> list[ProbeDraft]:
        """More unseen members and non-members for each confirmed hypothesis."""
        out: list[ProbeDraft] = []
        for h in state.hypotheses:
            if h.status is Status.CONFIRMED and not h.is_control and probes_left.get(h.id, 0) > 0:
                out += await asyncio.to_thread(serial, self._drafts, state, h, state.round + 11,
                                               min(3, probes_left[h.id]))
        return out

    # -- conclusion ---------------------------------------------------------------

    def _current_probes(self, state: RunState, h: Hypothesis) -> list[Probe]:
        """Probes of the hypothesis's current predicate (after its last refinement)."""
        since = max((u.round for u in h.updates if u.status is Status.REFINED), default=0)
        return [p for p in state.probes_of(h.id) if p.round > since]

    async def conclude(self, state: RunState) -> Conclusion:
        await self._evidence(state)
        return await asyncio.to_thread(serial, self._conclude, state)

    def _conclude(self, state: RunState) -> Conclusion:
        ev = self._ev
        assert ev is not None
        ranked: list[tuple[float, Hypothesis, Scored, list[Probe]]] = []
        order: dict[int, float] = {}
        for h in state.hypotheses:
            keys = keys_of(h)
            if h.is_control or not keys:
                continue
            probes = self._current_probes(state, h)
            s = score(keys, ev)
            conf = agreement(probes) if probes else 0.0
            if h.status is not Status.CONFIRMED:
                conf *= 0.5
            ranked.append((conf * (0.5 + 0.5 * s.f1), h, s, probes))  # the label's confidence
            # The first label is the confirmed reading that explains the most of the firing its
            # probes agree with (agreement x F1, less a conjunction's extra claim): a wider reading
            # whose probes held is not lost to a narrower one whose probes agreed a little more often.
            order[h.id] = conf * merit(s)
        ranked.sort(key=lambda r: -order[r[1].id])
        labels: list[Label] = []
        parts: list[str] = []
        covered: frozenset[int] = frozenset()
        best_f1 = max((c.f1 for c in self._cands), default=0.0)
        for value, h, s, probes in ranked:
            if h.status is not Status.CONFIRMED or s.f1 < F1_FLOOR:
                continue  # a confirmed reading of a sliver of the firing does not explain the feature
            if labels and len(s.hits & covered) > MERGE_OVERLAP * max(len(s.hits), 1):
                continue  # the same behaviour as a label already given (a member or a wider class of it)
            covered |= s.hits
            if not labels:
                self.best, self.best_confirmed = s, True
            labels.append(self._label(s, probes, value))
            parts.append(self._summary(s, probes))
        if not labels:
            # The reading the data support best, whatever its probes said.
            top = max(ranked, key=lambda r: merit(r[2]), default=None)
            if top is not None and top[2].f1 >= F1_FLOOR:
                # A low-confidence label: the data suggest it, the probes did not confirm it.
                _, h, s, probes = top
                self.best = s
                label = self._label(s, probes, top[0], tentative=True)
                labels.append(label)
                parts.append(f"Inconclusive: the best reading, {label.name.removesuffix(' (tentative)')}, was not "
                             "confirmed by its probes.")
                parts.append(self._summary(s, probes))
            else:
                peaks = ", ".join(repr(w) for w in dict.fromkeys(ev.peak_words[:4]))
                slivers = [names.conjunction_name(s.keys) for _, h, s, _ in ranked if h.status is Status.CONFIRMED]
                probed = (f"the readings its probes confirmed ({'; '.join(slivers[:2])}) cover little of it" if slivers
                          else "no probe reproduced it")
                labels.append(Label("unexplained (likely noise)",
                                    f"No predicate of the library covers its firing (best F1 {best_f1:.2f} < "
                                    f"{F1_FLOOR}) and {probed}; top exemplars peak on {peaks}.", 0.0))
                parts.append("Inconclusive, likely noise: " + labels[-1].description)
        control = next((h for h in state.hypotheses if h.is_control), None)
        if control is not None and control.status is not Status.PENDING:
            held = "held" if control.status is Status.CONFIRMED else "failed"
            silent = [activation_at(p) for p in state.probes_of(control.id)]
            if silent:
                parts.append(f"Control ({control.text.rstrip('.')}) {held}: silent probes peaked at "
                             f"{max(silent):.2f}.")
        evidence = [EvidenceItem(p.draft.text, activation_at(p), p.draft.hypothesis_id, as_expected(p))
                    for p in state.probes]
        return Conclusion(" ".join(dict.fromkeys(parts)), labels, evidence)

    def _label(self, s: Scored, probes: Sequence[Probe], confidence: float, tentative: bool = False) -> Label:
        name = names.conjunction_name(s.keys)
        gloss = names.definition(s.keys[0])
        ok = sum(as_expected(p) for p in probes)
        unseen = [p.draft.rationale.split(", ")[-1] for p in probes
                  if p.draft.expected is Expect.FIRES and fired(p) and "member" in p.draft.rationale]
        desc = f"Fires on {name}" + (f" ({gloss})" if gloss else "") + self._examples() + "."
        desc += (f" On the exemplar windows {s.precision:.0%} of tokens that are {name} fire and {s.recall:.0%} "
                 f"of firing tokens are {name}.")
        if probes:
            desc += f" {ok} of {len(probes)} probes behaved as predicted"
            desc += f", including unseen members {', '.join(dict.fromkeys(unseen))}." if unseen else "."
        if tentative:
            desc += " Tentative: its probes did not confirm it."
        desc += f" Confidence {confidence:.2f}."
        return Label(name if not tentative else f"{name} (tentative)", desc, round(confidence, 3))

    def _summary(self, s: Scored, probes: Sequence[Probe]) -> str:
        """One label in plain words for the explanation's description: what it fires on,
        with examples, and what the probes showed about unseen members."""
        name = names.conjunction_name(s.keys)
        text = f"Fires on {name}{self._examples()}."
        fresh = [p.draft.rationale.rsplit(", ", 1)[-1] for p in probes
                 if p.draft.expected is Expect.FIRES and fired(p) and "member" in p.draft.rationale]
        quiet = [p.draft.rationale.rsplit(", ", 1)[-1] for p in probes
                 if p.draft.expected is Expect.SILENT and not fired(p) and "non-member" in p.draft.rationale]
        if fresh:
            text += f" It also fires on {', '.join(dict.fromkeys(fresh))}, which the exemplars never showed"
            text += f", and stays silent on {', '.join(dict.fromkeys(quiet))}." if quiet else "."
        return text

    def _examples(self, count: int = 3) -> str:
        """', as in "…to whom", "…on whom"': the ends of top exemplar contexts, up to the peak word."""
        if self._ev is None:
            return ""
        shown: list[str] = []
        for c in self._ev.contexts:
            words = c.text[: c.end].replace("\n", " ").split()
            tail = " ".join(words[-4:])
            if tail and tail not in shown:
                shown.append(tail)
            if len(shown) >= count:
                break
        return ", as in " + ", ".join(f'"…{t}"' for t in shown) if shown else ""

    def route_score(self, fresh_top: Sequence[Trace], fresh_other: Sequence[Trace], threshold: float) -> float:
        """How well the best label predicts firing on windows it was not fitted on:
        its F1 there, halved when its probes did not confirm it (0 without a label)."""
        if self.best is None:
            return 0.0
        ev = serial(gather, fresh_top, fresh_other, threshold)
        f1 = score(self.best.keys, ev).f1 if ev.firing else 0.0
        return f1 if self.best_confirmed else f1 / 2

    @staticmethod
    def findings(state: RunState, conclusion: Conclusion) -> str:
        """What the symbolic pass measured, for the LLM that takes over."""
        lines = [f"- {h.text} -> {h.status.value}" + (f" ({h.updates[-1].reason[:160]})" if h.updates else "")
                 for h in state.hypotheses]
        return "Its hypotheses:\n" + "\n".join(lines) + f"\nIts conclusion: {conclusion.description[:400]}"
