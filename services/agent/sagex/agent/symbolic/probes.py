"""Probe texts that make a predicate true or false, checked by tagging them.

Generators propose; the tagger decides: a text is kept as a "true" probe only if
the predicate holds on one of its words, and as a "false" probe only if it holds
on none. Proposals are minimal pairs (an exemplar's context with its peak word
swapped for another member of the class, or for a non-member), fresh sentences
from a built-in text bank, fresh class members from WordNet and entity lists, and
structural edits (wrap in brackets, break the line, make a list item)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources as files
from typing import NamedTuple

from sagex.agent.symbolic import closed, resources
from sagex.agent.symbolic.names import kind
from sagex.agent.symbolic.tagging import SENTENCE_END, Tagged, meaning, tag

# Fresh members of entity types, for classes WordNet does not list.
ENTITIES = {
    "PERSON": ["Maria Lopez", "John Smith", "Aiko Tanaka", "Peter Novak", "Fatima Khan"],
    "GPE": ["France", "Tokyo", "Kenya", "Ohio", "Madrid", "Brazil"],
    "ORG": ["the United Nations", "Toyota", "Oxford University", "the World Bank", "Siemens"],
    "DATE": ["last Tuesday", "12 May 1998", "next spring", "the 1990s"],
    "TIME": ["6 pm", "midnight", "half past nine"],
    "CARDINAL": ["seventeen", "300", "two thousand"],
    "ORDINAL": ["third", "fifth", "twentieth"],
    "MONEY": ["$40", "300 euros", "five dollars"],
    "PERCENT": ["15 percent", "3%"],
    "NORP": ["French", "Buddhist", "Canadian"],
    "LOC": ["the Alps", "the Pacific", "the Sahara"],
}
TYPICAL = 12  # members a probe swaps in: the most common of a class (its list is ordered so)
SIBLING = "another member of"  # in the rationale of a probe that swaps a word for a class sibling
STRUCTURE_EDITS = {
    "in:paren": ("(", ")"), "in:bracket": ("[", "]"), "in:brace": ("{", "}"), "in:quote": ('"', '"'),
    "in:code": ("`", "`"), "depth:2": ("([", "])"),
}


Span = tuple[int, int]


class Proposal(NamedTuple):
    """A probe text, why it should fire or stay silent, and where: the character span the
    prediction is about (the swapped word of a minimal pair), or None for anywhere in it.
    A minimal pair is read at its edit: the exemplar around it may fire for its own reasons."""

    text: str
    why: str
    focus: Span | None = None


@dataclass(frozen=True)
class Context:
    """An exemplar's text around its peak, with the peak word's character span."""

    text: str
    start: int
    end: int

    @property
    def word(self) -> str:
        return self.text[self.start: self.end]

    def swap(self, replacement: str) -> str:
        return self.text[: self.start] + replacement + self.text[self.end:]

    def swapped_span(self, replacement: str) -> Span:
        """Where ``replacement`` sits in ``swap(replacement)``."""
        lead = len(replacement) - len(replacement.lstrip())
        return self.start + lead, self.start + len(replacement)


def holds(keys: Sequence[str], words: Iterable[frozenset[str]]) -> bool:
    """All ``keys`` on one word. Model-token keys are read at word level: a probe is
    tagged by words, and "tok:x" is then "word:x"."""
    wanted = [("word:" + k[4:]) if k.startswith("tok:") else k for k in keys
              if k not in ("spell:word_start", "spell:continuation")]
    return any(all(k in w for k in wanted) for w in words)


def is_true(keys: Sequence[str], tagged: Tagged) -> bool:
    # A model token can sit inside a word ("0" in "2019"): read it in the raw text.
    pieces = [k[4:] for k in keys if k.startswith("tok:")]
    if pieces and not all(p in tagged.text.lower() for p in pieces):
        return False
    rest = [k for k in keys if not k.startswith("tok:")]
    return not rest or holds(rest, (w.keys for w in tagged.words))


def is_false(keys: Sequence[str], tagged: Tagged) -> bool:
    """Nowhere true, and the main key nowhere at all (so one part alone cannot fire it)."""
    main = keys[0]
    if main.startswith("tok:"):
        return main[4:] not in tagged.text.lower()
    return not holds([main], (w.keys for w in tagged.words)) and not is_true(keys, tagged)


@lru_cache(maxsize=1)
def bank() -> tuple[str, ...]:
    text = files.files("sagex.agent.symbolic").joinpath("textbank.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    # A few multi-line texts, so line, paragraph and list predicates have true cases.
    joined = ["\n".join(lines[i: i + 4]) for i in range(0, len(lines), 9)]
    return tuple(lines + joined)


@lru_cache(maxsize=4096)
def wordnet_members(key: str, limit: int = 40) -> tuple[str, ...]:
    """Words whose first sense falls under ``key`` (hyp:SYNSET or ss:LEXNAME)."""
    head, _, value = key.partition(":")
    wn = resources.wordnet()
    out: list[str] = []
    if head == "hyp":
        root = wn.synset(value)
        pool = list(root.closure(lambda s: s.hyponyms() + s.instance_hyponyms()))
    elif head == "ss":
        pos = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}[value.split(".")[0]]
        pool = [s for s in wn.all_synsets(pos) if s.lexname() == value][:4000]
    else:
        return ()
    for s in pool:
        for lemma in s.lemma_names():
            if len(out) >= 4 * limit:
                break
            if not lemma.isalpha() or lemma.lower() in (w.lower() for w in out):
                continue
            word = lemma.replace("_", " ")
            upos = "PROPN" if word[:1].isupper() else {"n": "NOUN", "v": "VERB", "a": "ADJ", "s": "ADJ",
                                                       "r": "ADV"}[s.pos()]
            # A typical member: its most frequent sense is in the class, and the word is mostly
            # used in that part of speech ("young" the adjective is no animal word).
            pos = "a" if s.pos() == "s" else s.pos()
            usual = 2 * frequency(word, pos) >= frequency(word) or key in meaning(word, "ADJ", 1)  # "red"
            if key in meaning(word, upos, 1) and usual:
                out.append(word)
    # Typical members first: common words (their frequency in a sense-tagged corpus, then
    # their number of senses). A probe with a rare member ("cuckold" for a relative) tests
    # what the model knows of the word, not whether the feature stands for the class.
    out.sort(key=lambda w: (-frequency(w), -len(wn.synsets(w.replace(" ", "_"))), len(w)))
    return tuple(out[:limit])


@lru_cache(maxsize=20_000)
def frequency(word: str, pos: str | None = None) -> int:
    """How often ``word`` (as a WordNet lemma, in part of speech ``pos`` or any) occurs in
    WordNet's sense-tagged corpus; 0 without the counts."""
    key = word.replace(" ", "_").lower()
    try:
        return sum(lemma.count() for s in resources.wordnet().synsets(key, pos=pos) for lemma in s.lemmas()
                   if lemma.name().lower() == key)
    except OSError:  # no cntlist.rev: no frequencies
        return 0


def members(key: str, context_word: str) -> list[str]:
    """Candidate words for ``key`` (unverified): WordNet, entity lists, the text bank."""
    head, _, value = key.partition(":")
    out: list[str] = []
    if head in ("word", "tok", "lemma"):
        out.append(value if not context_word[:1].isupper() else value.capitalize())
    for text in bank():
        for w in tag(text).words:
            if (key in w.keys and (head != "hyp" or _first_sense_in(w.keys, key))
                    or head == "tok" and f"word:{value}" in w.keys):
                out.append(w.text)
    if head in ("hyp", "ss"):
        out += list(wordnet_members(key))
    elif head == "ent":
        out += ENTITIES.get(value, [])
    elif head == "cls":  # a closed class: every member is known
        out += [m.capitalize() if context_word.strip()[:1].isupper() else m for m in closed.members(value)]
    firsts: dict[str, str] = {}  # each word once, in its first spelling, in order
    for member in out:
        firsts.setdefault(member.lower(), member)
    return list(firsts.values())


def _lemma_pos(word_keys: frozenset[str]) -> tuple[str, str]:
    lemma = next((k[6:] for k in word_keys if k.startswith("lemma:")), "")
    return lemma, next((k[4:] for k in word_keys if k.startswith("pos:")), "")


def _first_sense_in(word_keys: frozenset[str], key: str) -> bool:
    """Whether a tagged word is in class ``key`` by its most frequent sense (a typical member),
    not only by a rarer one ("wheat" the colour)."""
    return key in meaning(*_lemma_pos(word_keys), 1)


def non_members(key: str, like: frozenset[str]) -> list[str]:
    """Words of the text bank of the same part of speech as ``like`` without ``key``."""
    pos = next((k for k in like if k.startswith("pos:")), None)
    out: list[str] = []
    for text in bank():
        for w in tag(text).words:
            if key not in w.keys and (pos is None or pos in w.keys) and w.text.lower() not in (o.lower() for o in out):
                out.append(w.text)
    return out


def _edits(key: str, text: str) -> list[str]:
    """``text`` changed so that the structural ``key`` holds somewhere in it."""
    words = text.split(" ")
    mid = max(1, len(words) // 2)
    if key in STRUCTURE_EDITS:
        a, b = STRUCTURE_EDITS[key]
        return [" ".join(words[:mid]) + f" {a}" + " ".join(words[mid: mid + 2]) + f"{b} " + " ".join(words[mid + 2:])]
    if key == "in:url":
        return [f"{text} See https://www.example.org/{words[0].strip('.,').lower()}/index.html for more."]
    if key == "in:comment":
        return [f"x = compute(y)  # {text}", f"return total  // {text}"]
    if key in ("at:line_start", "at:line_end"):
        return [" ".join(words[:mid]) + "\n" + " ".join(words[mid:])]
    if key == "at:para_start":
        return [f"First part.\n\n{text}"]
    if key in ("list:item", "list:marker"):
        return [f"Notes:\n- {text}\n- {words[-1]}", f"Steps:\n1. {text}\n2. Done."]
    if key == "at:sent_start":
        return [text, f"It rained. {text}"]
    if key.startswith("after:"):
        mark = "." if key == "after:sentence_end" else key[6:]
        closing = {"(": ")", "[": "]", "{": "}", '"': '"'}.get(mark, "")
        # The mark before a middle word (and closed again, so only the word after it changes).
        inside = (" ".join(words[:mid]) + f" {mark}" + " ".join(words[mid: mid + 2]) + f"{closing} "
                  + " ".join(words[mid + 2:]))
        return [f"It rained{mark} {text}", inside] if mark in ".!?,;:" else [inside]
    return []


def _context_removed(ctx: Context, key: str) -> str | None:
    """For "after:MARK": the exemplar's text up to its peak word with the mark before the
    word taken away (and the text before any earlier such mark cut off, since the
    feature would fire there too); None for other keys or when no mark is there."""
    if not key.startswith("after:"):
        return None
    marks = SENTENCE_END if key == "after:sentence_end" else key[6:]
    before = ctx.text[: ctx.start].rstrip(" \t")
    if not before or before[-1] not in marks:
        return None
    head = before[:-1]
    head = head[max(head.rfind(m) for m in marks) + 1:]
    text = f"{head.rstrip()} {ctx.word.strip()}".strip()
    return text if " " in text else None


def _previous_word(ctx: Context, key: str) -> tuple[int, int, frozenset[str], int] | None:
    """The span and keys of the word right before ``ctx``'s peak word, and where the text
    after the last earlier word with ``key`` begins (a silent probe must hold it nowhere)."""
    tagged = tag(ctx.text)
    at = tagged.words_in(ctx.start, ctx.end)
    if not at or at[0] == 0 or f"prev:{key}" not in tagged.words[at[0]].keys:
        return None  # not an instance of the context reading
    w = tagged.words[at[0] - 1]
    cut = max((v.end for v in tagged.words[: at[0] - 1] if key in v.keys), default=0)
    return w.start, w.end, w.keys, cut


def context_pairs(keys: tuple[str, ...], ctx: Context, salt: int) -> list[tuple[Proposal, bool]]:
    """Minimal pairs for a context reading ("right after a preposition"): the exemplar with
    the word before its peak word swapped for another member of the context's class
    (expected to fire) or for a non-member (expected silent). The peak word stays, so the
    pair tests the context alone, which no swap of the peak word can."""
    ctxkey = next((k for k in keys if k.startswith("prev:")), None)
    prev = _previous_word(ctx, ctxkey[5:]) if ctxkey is not None else None
    if ctxkey is None or prev is None:
        return []
    inner = ctxkey[5:]
    start, end, like, cut = prev
    old = ctx.text[start:end]
    out: list[tuple[Proposal, bool]] = []
    case = str.lower if old.islower() else (lambda w: w)
    cands = [case(m) for m in members(inner, old) if m.lower() != old.lower()]
    peak = ctx.word.strip()
    if cands:
        m = cands[salt % len(cands)]
        shift = len(m) - (end - start)
        out.append((Proposal(ctx.text[:start] + m + ctx.text[end:],
                             f"the word before {peak!r}, {old!r}, swapped for another member, {m!r}",
                             (ctx.start + shift, ctx.end + shift)), True))
    # Of the same part of speech when the class is not one itself ("after 'the'": another determiner).
    others = [case(o) for o in non_members(inner, like if not inner.startswith(("pos:", "tag:", "tags:")) else
                                           frozenset())]
    # Up to the peak word, from after any earlier member of the class (it would fire there),
    # and long enough that the model reads it as text.
    if not others or len(ctx.text[cut:start].split()) < 3:
        return []  # a pair or nothing: the member swap alone keeps the peak word, which may fire by itself
    o = others[salt % len(others)]
    text = ctx.text[cut:start].lstrip() + o + ctx.text[end: ctx.end]
    out.append((Proposal(text, f"the word before {peak!r}, {old!r}, swapped for a non-member, {o!r}",
                         (len(text) - (ctx.end - ctx.start), len(text))), False))
    return out


def _flatten(text: str) -> str:
    """``text`` with brackets, quotes, code marks, comments and line breaks removed."""
    for c in "()[]{}\"`“”#":
        text = text.replace(c, "")
    return " ".join(text.replace("//", " ").split())


def where(keys: Sequence[str], tagged: Tagged) -> Span | None:
    """The span of the words of ``tagged`` where ``keys`` hold (first to last; None if none);
    a model token inside a word ("0" of "2020") is found in the raw text."""
    pieces = [k[4:] for k in keys if k.startswith("tok:")]
    wanted = [k for k in keys if not k.startswith("tok:") and k not in ("spell:word_start", "spell:continuation")]
    hits = [w for w in tagged.words if all(k in w.keys for k in wanted)
            and all(p in w.text.lower() for p in pieces)]
    if not hits and pieces and not wanted:
        at = tagged.text.lower().find(pieces[0])
        return (at, at + len(pieces[0])) if at >= 0 else None
    return (hits[0].start, hits[-1].end) if hits else None


def probe_texts(keys: tuple[str, ...], contexts: Sequence[Context], seen: set[str], salt: int, want_true: int,
                want_false: int) -> tuple[list[Proposal], list[Proposal]]:
    """(true probes, false probes), verified by tagging. A true probe's focus is where the
    predicate holds in it (its swapped word, for a minimal pair); a false minimal pair's is
    its swapped word, any other false probe's the whole text."""
    main = keys[0]
    trues: list[Proposal] = []
    falses: list[Proposal] = []
    used: set[str] = set()

    def add(text: str, truth: bool, why: str, focus: Span | None = None) -> None:
        if text in used or not text.strip():
            return
        tagged = tag(text)
        if truth and len(trues) < want_true and is_true(keys, tagged):
            trues.append(Proposal(text, why, focus or where(keys, tagged)))
            used.add(text)
        elif not truth and len(falses) < want_false and is_false(keys, tagged):
            falses.append(Proposal(text, why, focus))
            used.add(text)

    ctxs = [contexts[(salt + i) % len(contexts)] for i in range(len(contexts))] if contexts else []
    # 0. for a context reading, minimal pairs in its context first: they test what it claims
    for ctx in ctxs[:3]:
        for proposal, truth in context_pairs(keys, ctx, salt):
            add(proposal.text, truth, proposal.why, proposal.focus)
    cands = members(main, ctxs[0].word if ctxs else "")
    fresh = [m for m in cands if m.strip().lower() not in seen] or cands
    fresh = fresh[:TYPICAL]
    rot = salt * 3
    fresh = fresh[rot % len(fresh):] + fresh[: rot % len(fresh)] if fresh else []
    # 1. minimal pairs: an exemplar context with its peak word swapped for another member
    for ctx, m in zip(ctxs, fresh, strict=False):
        if m.strip().lower() != ctx.word.strip().lower():
            add(ctx.swap(m), True, f"{ctx.word.strip()!r} swapped for another member, {m!r}", ctx.swapped_span(m))
    # 2. fresh members in bank sentences, and structural edits of bank sentences
    texts = bank()
    for i in range(len(texts)):
        t = texts[(salt * 7 + i) % len(texts)]
        add(t, True, "a fresh sentence where it holds")
        for e in _edits(main, t):
            add(e, True, f"edited so that {main} holds")
        if len(trues) >= want_true:
            break
    # 3. minimal pairs the other way: the peak word swapped for a non-member, or (for a
    # context predicate, which no swap of the word changes) the context taken away
    for ctx in ctxs:
        if len(falses) >= want_false:
            break
        if (bare := _context_removed(ctx, main)) is not None:
            word = ctx.word.strip()
            add(bare, False, f"the mark before {word!r} taken away", (len(bare) - len(word), len(bare)))
        like = tag(ctx.text).words
        peak = [w.keys for w in like if w.start < ctx.end and ctx.start < w.end]
        others = non_members(main, peak[0] if peak else frozenset())
        if others:
            o = others[(salt + len(falses)) % len(others)]
            o = o if ctx.word[:1] != " " else " " + o.lstrip()
            add(ctx.swap(o), False, f"{ctx.word.strip()!r} swapped for a non-member, {o.strip()!r}",
                ctx.swapped_span(o))
        if kind(main) == "structure":  # for another key it would repeat what the exemplar showed
            add(_flatten(ctx.text), False, "the context with its structure removed")
    for i in range(len(texts)):
        if len(falses) >= want_false:
            break
        t = texts[(salt * 5 + i + 3) % len(texts)]
        add(t, False, "a sentence where it holds nowhere")
    return trues, falses


CLASS_ORDER = ("hyp", "ent", "ss", "tag")


def best_class(word_keys: frozenset[str]) -> str | None:
    """A class of the word other than WordNet's: its entity type, supersense or fine tag."""
    for head in CLASS_ORDER[1:]:
        ks = sorted(k for k in word_keys if k.startswith(head + ":"))
        if ks:
            return ks[0]
    return None


def sibling_probes(ctx: Context, count: int) -> list[tuple[str, str, str]]:
    """``ctx`` with its peak word swapped for other members of the word's best class:
    (text, sibling, class key). A single-token feature stays silent on all of them."""
    tagged = tag(ctx.text)
    at = tagged.words_in(ctx.start, ctx.end)
    if not at:
        return []
    keys = tagged.words[at[0]].keys
    nearest = _nearest_first(ctx.text, at[0])
    key = nearest[0] if nearest else best_class(keys)
    if key is None:
        return []
    word = ctx.word.strip().lower()
    out = []
    for m in members(key, ctx.word):
        if m.strip().lower() == word or word in m.lower() or m.lower() in word:
            continue
        text = ctx.swap(m)
        if is_true((key,), tag(text)):
            out.append((text, m, key))
        if len(out) >= count:
            break
    return out


def _nearest_first(text: str, index: int) -> list[str]:
    """The hypernym keys of word ``index`` in the order WordNet gives them (nearest first)."""
    return [k for k in meaning(*_lemma_pos(tag(text).words[index].keys), 1) if k.startswith("hyp:")]
