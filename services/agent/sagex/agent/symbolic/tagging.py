"""Every token of a text with the predicates that hold on it.

A text is tagged once (spaCy: POS, morphology, lemma, sentences, entities; WordNet:
supersense and hypernyms of the lemma's first sense; a character scan: brackets,
quotes, code, comments, lines, lists) and cached. Model tokens are mapped onto the
tagger's words by character offsets, so a BPE piece carries the facts of its word."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from nltk.stem.porter import PorterStemmer  # at import: importing it from two threads can deadlock

from sagex.agent.symbolic import closed, resources
from sagex.remote.traces import Trace

# Word-level keys copied onto the next word as "prev:KEY" (a predicate applied to the
# previous word). Hypernyms are left out: they would multiply the keys for little gain.
PREV_KINDS = ("word:", "lemma:", "pos:", "tag:", "ss:", "ent:", "cls:", "cap:", "spell:punct", "spell:digit",
              "at:sent_start", "at:line_start")
MORPH = ("Number", "Tense", "Person", "Degree", "VerbForm")
# Common English affixes: word families by form ("-ly", "un-"), beside the tagger's morphology.
SUFFIXES = ("s", "es", "ed", "ing", "ly", "er", "est", "tion", "sion", "ness", "ment", "able", "ible", "ful", "less",
            "ous", "ive", "al", "ize", "ise", "ity", "ism", "ist", "ship", "ward", "wise")
PREFIXES = ("un", "re", "in", "im", "dis", "pre", "non", "over", "under", "mis", "sub", "inter", "anti")
WN_POS = {"NOUN": "n", "PROPN": "n", "VERB": "v", "ADJ": "a", "ADV": "r"}
MAX_HYPERNYMS = 12  # per sense
SENSES = 3  # of a lemma, most frequent first
_LIST = re.compile(r"^[ \t]*(?:[-*•+]|\d{1,3}[.)]|[a-z][.)])[ \t]+")
_OPEN = {"(": "paren", "[": "bracket", "{": "brace"}
SENTENCE_END = ".!?"
STRUCTURE_HEADS = ("in:", "depth:", "list:item")  # keys of a place in the text (``_structure``)
_INNER_MARK = re.compile(r"[^\w\s](?=\w)")
_CLOSE = {")": "paren", "]": "bracket", "}": "brace"}
_URL = re.compile(r"\b(?:[a-z][a-z0-9+.-]*://|www\.)[^\s<>\"'`]+", re.IGNORECASE)


@dataclass(frozen=True)
class Word:
    start: int
    end: int
    text: str
    keys: frozenset[str]


@dataclass(frozen=True)
class Tagged:
    text: str
    words: tuple[Word, ...]
    structure: tuple[frozenset[str], ...] = ()  # per character: inside brackets, quotes, code, a URL ...

    def words_in(self, start: int, end: int) -> list[int]:
        return [i for i, w in enumerate(self.words) if w.start < end and start < w.end]

    def holds_anywhere(self, key: str) -> bool:
        return any(key in w.keys for w in self.words)


@lru_cache(maxsize=20_000)
def meaning(lemma: str, upos: str, senses: int = SENSES) -> tuple[str, ...]:
    """WordNet keys of the lemma: the supersense of its first (most frequent) sense, and
    the hypernyms above its first ``senses`` senses, the first sense's nearest first
    (instance-of links count as hypernyms). More than one sense, because the one a class
    needs is often not the first: "table" the furniture is the second sense, "child" the
    offspring (a relative) the second; the scores on the firing tokens decide which class
    the exemplars support."""
    wn_pos = WN_POS.get(upos)
    if wn_pos is None or not lemma.isalpha():
        return ()
    synsets = resources.wordnet().synsets(lemma.lower(), pos=wn_pos)
    if not synsets:
        return ()
    first = synsets[0]
    keys = [f"ss:{first.lexname()}"]
    roots = synsets[:senses]
    if wn_pos == "a":
        # WordNet gives adjectives no hypernyms. One that is also the noun for an attribute
        # ("blue", "scarlet", "black") takes that noun's classes: "colour words" covers both.
        nouns = resources.wordnet().synsets(lemma.lower(), pos="n")
        if nouns and nouns[0].lexname() == "noun.attribute" and lemma.lower() in nouns[0].lemma_names():
            roots = nouns[:1]
    seen: set[str] = set()
    for root in roots:
        frontier, found = [root], 0
        while frontier and found < MAX_HYPERNYMS:
            nxt = []
            for s in frontier:
                for h in s.hypernyms() + s.instance_hypernyms():
                    if h.name() not in seen:
                        seen.add(h.name())
                        keys.append(f"hyp:{h.name()}")
                        nxt.append(h)
                        found += 1
            frontier = nxt
    return tuple(keys)


def _structure(text: str) -> list[frozenset[str]]:
    """Per character: the structural keys of that place in the text."""
    out: list[frozenset[str]] = []
    stack: list[str] = []
    quote = code = comment = False
    fence = False
    line_start = 0
    in_list = False
    i = 0
    while i < len(text):
        c = text[i]
        if i == line_start:
            in_list = bool(_LIST.match(text[i: text.find("\n", i) if "\n" in text[i:] else len(text)]))
        keys: set[str] = set()
        keys.update(f"in:{k}" for k in set(stack))
        if len(stack) >= 2:
            keys.add("depth:2")
        if quote:
            keys.add("in:quote")
        if code or fence:
            keys.add("in:code")
        if comment:
            keys.add("in:comment")
        if in_list:
            keys.add("list:item")
        out.append(frozenset(keys))
        if text.startswith("```", i):
            fence = not fence
            out.extend([frozenset(keys)] * 2)
            i += 3
            continue
        if text.startswith("``", i):  # a reStructuredText literal: one mark, not two
            code = not code
            out.append(frozenset(keys))
            i += 2
            continue
        if c == "\n":
            comment = False
            quote = False  # an unclosed quote (a window cut mid-string) ends with its line
            line_start = i + 1
        elif c in _OPEN:
            stack.append(_OPEN[c])
        elif c in _CLOSE and stack and stack[-1] == _CLOSE[c]:
            stack.pop()
        elif c in "\"“”":
            quote = not quote if c == '"' else c == "“"
        elif c == "`":
            code = not code
        elif (c == "#" or text.startswith("//", i)) and (i == 0 or text[i - 1].isspace()) and not quote:
            comment = True  # "//" after a space: not the "//" of "https://"
        i += 1
    out = out[: len(text)]
    for m in _URL.finditer(text):
        for j in range(m.start(), m.end()):
            out[j] = out[j] | {"in:url"}
    return out


def _cap(word: str) -> str | None:
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return None
    if all(c.isupper() for c in letters):
        return "cap:upper" if len(letters) > 1 else "cap:title"
    if word[:1].isupper():
        return "cap:title"
    return "cap:lower" if all(c.islower() for c in letters) else "cap:mixed"


@lru_cache(maxsize=8192)
def tag(text: str) -> Tagged:
    """The words of ``text`` with their word-level keys (cached: texts repeat)."""
    doc = resources.nlp()(text)
    structure = _structure(text)
    stem = _stemmer(PorterStemmer)
    words: list[Word] = []
    prev_keys: frozenset[str] = frozenset()
    for t in doc:
        if t.is_space:
            continue
        s = t.text
        lower = s.lower()
        keys = {f"word:{lower}"}
        if t.is_alpha:
            keys.add(f"lemma:{t.lemma_.lower()}")
            keys.add(f"stem:{stem(lower)}")
        keys.add(f"pos:{t.pos_}")
        keys.add(f"tag:{t.tag_}")
        if t.tag_[:1] == "W" or t.tag_[:2] in ("NN", "VB", "JJ", "RB", "PR"):
            keys.add(f"tags:{t.tag_[:1] if t.tag_[:1] == 'W' else t.tag_[:2]}")  # a family of fine tags
        for feat in MORPH:
            for v in t.morph.get(feat):
                keys.add(f"morph:{feat}={v}")
        keys.update(meaning(t.lemma_, t.pos_) if t.is_alpha else ())
        keys.update(closed.classes_of(s))
        if t.ent_type_:
            keys.add(f"ent:{t.ent_type_}")
        if (cap := _cap(s)) is not None:
            keys.add(cap)
        if s.isdigit():
            keys.add("spell:digit")
        if any(c.isdigit() for c in s):
            keys.add("spell:has_digit")
        if t.is_punct or all(not c.isalnum() for c in s):
            keys.add("spell:punct")
        if t.is_alpha:
            keys.add("spell:letters")  # with a class: "numbers written in letters", not in digits
        if t.is_alpha:
            keys.add("len:short" if len(s) <= 3 else "len:long" if len(s) >= 8 else "len:medium")
            if len(s) >= 5:  # a stem of at least three letters left over
                keys.update(f"suffix:{x}" for x in SUFFIXES if lower.endswith(x) and len(lower) - len(x) >= 3)
                keys.update(f"prefix:{x}" for x in PREFIXES if lower.startswith(x) and len(lower) - len(x) >= 3)
        keys.update(structure[t.idx] if t.idx < len(structure) else ())
        before = text[: t.idx]
        line_before = before[before.rfind("\n") + 1:]
        if (not line_before.strip() or _LIST.fullmatch(line_before)) and "\n" in before:
            keys.add("at:line_start")  # a text's first word is at:text_start, not a line start
        if _LIST.match(line_before + s + " ") and not line_before.strip() and _LIST.fullmatch(s + " "):
            keys.add("list:marker")
        after = text[t.idx + len(s):]
        if not after[: (after.find("\n") if "\n" in after else len(after))].strip() and "\n" in after:
            keys.add("at:line_end")
        if t.is_sent_start and not t.is_punct:
            keys.add("at:sent_start")
        keys.update(after_keys(before))
        for mark in _INNER_MARK.finditer(s):  # "org" of "wikipedia.org": a model token after a mark
            keys.update(after_keys(s[: mark.end()]))
        if not before.strip():
            keys.add("at:text_start")
        elif before.rstrip(" \t").endswith("\n\n"):
            keys.add("at:para_start")
        keys.update(f"prev:{k}" for k in prev_keys)
        frozen = frozenset(keys)
        words.append(Word(t.idx, t.idx + len(s), s, frozen))
        prev_keys = frozenset(k for k in frozen if k.startswith(PREV_KINDS))
    return Tagged(text, tuple(words), tuple(structure))


def after_keys(before: str) -> set[str]:
    """Context at the character level: the punctuation mark right before a word or a
    model token (spaces skipped, a line break ends the search). It sees what a word
    tagger folds into one word ("en.wikipedia.org", "os.path"), which is where a model
    token's own context lies."""
    stripped = before.rstrip(" \t")
    c = stripped[-1:]
    if not c or c == "\n" or c.isalnum() or c == "_":
        return set()
    return {f"after:{c}", "after:sentence_end"} if c in SENTENCE_END else {f"after:{c}"}


_STEMMER = None


def _stemmer(cls: type) -> Callable[[str], str]:
    global _STEMMER
    if _STEMMER is None:
        _STEMMER = cls()
    return _STEMMER.stem  # type: ignore[attr-defined,no-any-return]


def token_spans(tokens: Sequence[str], special: frozenset[int]) -> tuple[str, list[tuple[int, int]]]:
    """The text the model saw (special tokens left out) and each token's span in it."""
    spans, pos, parts = [], 0, []
    for i, tok in enumerate(tokens):
        if i in special:
            spans.append((pos, pos))
            continue
        parts.append(tok)
        spans.append((pos, pos + len(tok)))
        pos += len(tok)
    return "".join(parts), spans


def piece_keys(tokens: Sequence[str], special: frozenset[int], i: int) -> set[str]:
    tok = tokens[i]
    keys = {f"tok:{tok.strip().lower() or tok}"}
    glued = (i > 0 and (i - 1) not in special and tok[:1].isalnum() and tokens[i - 1][-1:].isalnum())
    if tok.strip() and any(c.isalnum() for c in tok):
        keys.add("spell:continuation" if glued else "spell:word_start")
    return keys


def trace_facts(trace: Trace) -> list[frozenset[str]]:
    """The keys that hold on each model token of ``trace`` (empty for special tokens)."""
    text, spans = token_spans(trace.tokens, trace.special)
    tagged = tag(text)
    out: list[frozenset[str]] = []
    for i, (a, b) in enumerate(spans):
        if i in trace.special or a == b:
            out.append(frozenset())
            continue
        lead = len(trace.tokens[i]) - len(trace.tokens[i].lstrip())
        keys: set[str] = set()
        for w in tagged.words_in(a + lead, b) or tagged.words_in(a, b):
            keys |= tagged.words[w].keys
        # A model token's character context is its own, not its word's (the "org" of
        # "wikipedia.org" comes right after a period; the word does not), and so is where it
        # sits (the tagger keeps ":func:`ssl" one word, which starts outside the backticks).
        at = min(a + lead, len(tagged.structure) - 1)
        keys = {k for k in keys if not k.startswith(("after:", *STRUCTURE_HEADS))} | after_keys(text[: a + lead])
        keys |= tagged.structure[at] if at >= 0 else frozenset()
        keys |= piece_keys(trace.tokens, trace.special, i)
        out.append(frozenset(keys))
    return out
