"""How well each predicate separates firing tokens from silent ones in the windows
the explainer may see (top exemplars, quantile bands, silent windows)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from sagex.agent.state import Expect, ProbeDraft
from sagex.agent.symbolic import names, resources
from sagex.agent.symbolic.names import kind
from sagex.agent.symbolic.probes import SIBLING, Context, sibling_probes
from sagex.agent.symbolic.tagging import trace_facts
from sagex.remote.traces import Trace

MIN_SUPPORT = 0.15  # of firing tokens: rarer keys are not candidates
CONJUNCTION_GAIN = 0.05  # F1 a conjunction must add over its better part to be a candidate
OCCAM = 0.1  # F1 it must add over the best single reading to rank above it (``merit``)
# Tie-break between keys that cover the same tokens: a class says more than a word.
PREFERENCE = ["hyp", "ent", "ss", "cls", "tag", "tags", "morph", "pos", "in", "depth", "at", "list", "cap", "spell",
              "suffix", "prefix", "len", "word", "lemma", "stem", "tok", "after", "prev"]
# Keys that qualify another (where the token sits, what comes before it): the second
# part of a conjunction, never its head.
QUALIFIERS = ("prev:", "after:", "spell:word_start", "spell:continuation")


@dataclass(frozen=True)
class Scored:
    keys: tuple[str, ...]
    tp: int
    fp: int
    fn: int
    hits: frozenset[int]  # firing-token indices it covers

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Evidence:
    """Per-token facts of the visible windows, split by firing."""

    firing: list[frozenset[str]]
    silent: list[frozenset[str]]
    contexts: list[Context]  # one per top exemplar, around its peak
    peak_words: list[str]


def _context(trace: Trace, radius: int = 12) -> Context | None:
    i = trace.argmax
    lo = max(0, i - radius)
    hi = min(len(trace.tokens), i + 4)
    keep = [j for j in range(lo, hi) if j not in trace.special]
    if i not in keep:
        return None
    text, start = "", 0
    for j in keep:
        if j == i:
            start = len(text) + len(trace.tokens[j]) - len(trace.tokens[j].lstrip())
        text += trace.tokens[j]
    end = start + len(trace.tokens[i].strip())
    # widen to the whole word the peak piece sits in
    while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum() and text[end - 1].isalnum():
        end += 1
    return Context(text, start, end) if end > start else None


def gather(top: Sequence[Trace], others: Sequence[Trace], threshold: float) -> Evidence:
    ev = Evidence([], [], [], [])
    for t in list(top) + list(others):
        facts = trace_facts(t)
        for i in t.content_positions:
            if not facts[i]:
                continue
            (ev.firing if t.values[i] >= threshold and t.values[i] > 0 else ev.silent).append(facts[i])
    for t in top:
        if t.max_activation >= threshold and t.max_activation > 0 and (c := _context(t)) is not None:
            ev.contexts.append(c)
            ev.peak_words.append(c.word.strip().lower())
    return ev


def score(keys: tuple[str, ...], ev: Evidence) -> Scored:
    hits = frozenset(i for i, f in enumerate(ev.firing) if all(k in f for k in keys))
    fp = sum(all(k in f for k in keys) for f in ev.silent)
    return Scored(keys, len(hits), fp, len(ev.firing) - len(hits), hits)


def merit(s: Scored) -> float:
    """F1 on the exemplars, less OCCAM per extra key: a conjunction says more than a single
    predicate and is likelier to fit a small sample by chance (ten exemplars), so it comes
    first only when it beats every single reading by that much."""
    return s.f1 - OCCAM * (len(s.keys) - 1)


def _rank(s: Scored) -> tuple[float, int, int, int]:
    head = s.keys[0].split(":", 1)[0]
    pref = PREFERENCE.index(head) if head in PREFERENCE else len(PREFERENCE)
    return (-round(merit(s), 3), len(s.keys), pref, -_depth(s.keys[0]))


@lru_cache(maxsize=20_000)
def _depth(key: str) -> int:
    """How specific a WordNet class is (its depth below the root; 0 for other keys). Of
    classes that fit the firing tokens equally well, the least general one comes first:
    it is the claim the exemplars support, and its probes (fresh members of it) test
    it; when members of a wider class fire too, refinement widens it."""
    head, _, value = key.partition(":")
    return int(resources.wordnet().synset(value).min_depth()) if head == "hyp" else 0


def candidates(ev: Evidence, limit: int = 40) -> list[Scored]:
    """Single keys and two-key conjunctions, best F1 first."""
    if not ev.firing:
        return []
    counts: Counter[str] = Counter(k for f in ev.firing for k in f)
    floor = max(2, MIN_SUPPORT * len(ev.firing)) if len(ev.firing) > 2 else 1
    singles = [score((k,), ev) for k, c in counts.items() if c >= floor]
    # A class whose firing members are all one word is that word's reading in disguise (a rare
    # sense of it, "joy" the positive stimulus): the word's own key stands for it, and sibling
    # probes widen it to a class when other members fire.
    singles = [s for s in singles if kind(s.keys[0]) != "meaning" or _distinct_words(s.hits, ev) >= 2]
    singles.sort(key=_rank)
    out = list(singles)
    heads = [s for s in singles if not s.keys[0].startswith(QUALIFIERS)][:8]
    # Word length is no qualifier of a reading: it separates the words of a small sample by chance.
    partners = [s for s in singles if not s.keys[0].startswith("len:")][:30]
    for a in heads:
        for b in partners:
            # Two words, or two classes, on one token are no reading: a class's keys come from
            # several senses of a word, and their intersection is a coincidence of spelling.
            if b.keys[0] == a.keys[0] or kind(b.keys[0]) == kind(a.keys[0]) in ("lexical", "meaning"):
                continue
            c = score((a.keys[0], b.keys[0]), ev)
            if c.f1 >= max(a.f1, b.f1) + CONJUNCTION_GAIN:
                out.append(c)
    out.sort(key=_rank)
    return out[:limit]


def _distinct_words(hits: frozenset[int], ev: Evidence) -> int:
    words = {k for i in hits for k in ev.firing[i] if k.startswith("lemma:")}
    return len(words) if words else len(hits)


def sibling_checks(top: Sequence[Trace], token: str, threshold: float, count: int = 2) -> list[ProbeDraft]:
    """Silent-expected probes for a single-token claim: exemplar contexts of ``token``
    with its word swapped for other members of the word's best class."""
    out: list[ProbeDraft] = []
    for t in top:
        if t.peak_token != token or t.max_activation < threshold or (c := _context(t)) is None:
            continue
        for text, member, key in sibling_probes(c, count - len(out)):
            out.append(ProbeDraft(0, text, Expect.SILENT, f"{c.word.strip()!r} swapped for {member!r}, {SIBLING} "
                                                          f"{names.name(key)}", c.swapped_span(member)))
        if len(out) >= count:
            break
    return out
