"""Concepts with programmatic, token-level labels.

A labeller reads one tokenised text (``Doc``: the text and each content token's
character span) and returns one label per token: ``POS`` (1), ``NEG`` (0) or
``AMBIGUOUS`` (-1). Ambiguous tokens are left out of probe training and of every
metric. Contextual labels are causal: a token's label depends only on the text
before its end (``inside X`` means X was opened before the token starts), because
the residual stream at a token sees nothing later.

Word-level concepts label the *last* token of a matching word positive (only
there has the model read the whole word) and its earlier tokens ambiguous.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

POS, NEG, AMBIGUOUS = 1, 0, -1
KINDS = ("lexical", "morphology", "structural", "position", "context", "user")


@dataclass(frozen=True)
class Doc:
    """One text with the character span of each content token (no BOS)."""

    text: str
    spans: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.spans)

    def token(self, i: int) -> str:
        start, end = self.spans[i]
        return self.text[start:end]


Labeller = Callable[[Doc], np.ndarray]
Templates = Callable[[random.Random], list[str]]


def _no_templates(_rng: random.Random) -> list[str]:
    return []


@dataclass(frozen=True)
class Concept:
    """A concept a planted feature stands for.

    ``description`` is the ground truth the judge compares explanations with;
    ``key_terms`` are regular expressions (case-insensitive), any of which in an
    explanation names the concept's category for the offline judge.
    ``templates`` makes extra documents with positives and hard negatives.
    """

    name: str
    kind: str
    description: str
    key_terms: tuple[str, ...]
    label: Labeller
    templates: Templates = field(default=_no_templates)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"concept name {self.name!r}: use lower_snake_case")
        if self.kind not in KINDS:
            raise ValueError(f"concept {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if not self.description.strip():
            raise ValueError(f"concept {self.name}: description is empty")


# --- labelling helpers -------------------------------------------------------------

WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


def words(doc: Doc, predicate: Callable[[str, int], bool | None]) -> np.ndarray:
    """Label words: ``predicate(word, start)`` -> True (positive), False (negative) or
    None (ambiguous). The word's last token takes the label, its earlier tokens are
    ambiguous (when positive); tokens outside words are negative."""
    labels = np.full(len(doc), NEG, np.int8)
    if not len(doc):
        return labels
    ends = np.array([e for _, e in doc.spans])
    starts = np.array([s for s, _ in doc.spans])
    for m in WORD.finditer(doc.text):
        verdict = predicate(m.group(), m.start())
        if verdict is False:
            continue
        inside = np.flatnonzero((starts < m.end()) & (ends > m.start()))
        if not len(inside):
            continue
        last = inside[-1]
        if verdict is None:
            labels[inside] = AMBIGUOUS
            continue
        labels[inside] = AMBIGUOUS
        # A token running past the word ("ly)") still marks its end: the model has read it.
        labels[last] = POS
    return labels


def word_set(names: Sequence[str], case_sensitive: bool = False) -> Callable[[str, int], bool]:
    pool = set(names) if case_sensitive else {n.lower() for n in names}
    return (lambda w, _s: w in pool) if case_sensitive else (lambda w, _s: w.lower() in pool)


def state(doc: Doc, inside: Callable[[str], bool | None]) -> np.ndarray:
    """Structural labels: ``inside(text_before_token)`` -> True/False/None, evaluated
    on the text strictly before each token (causal)."""
    return np.array([{True: POS, False: NEG, None: AMBIGUOUS}[inside(doc.text[:s])] for s, _ in doc.spans],
                    np.int8)


def tokens(doc: Doc, rule: Callable[[Doc, int], bool | None]) -> np.ndarray:
    return np.array([{True: POS, False: NEG, None: AMBIGUOUS}[rule(doc, i)] for i in range(len(doc))], np.int8)


def fill(rng: random.Random, frames: Sequence[str], slots: dict[str, Sequence[str]], n: int) -> list[str]:
    """``n`` texts, each three frames joined, every ``{slot}`` filled at random."""
    out = []
    for _ in range(n):
        parts = []
        for frame in rng.sample(list(frames), k=min(3, len(frames))):
            parts.append(re.sub(r"\{(\w+)\}", lambda m: rng.choice(list(slots[m.group(1)])), frame))
        out.append(" ".join(parts))
    return out
