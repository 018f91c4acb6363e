"""What the exemplars have in common: the statistics the heuristic policy and
triage reason from (peak tokens, neighbours, positions, character classes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sagex.remote.traces import Trace, normalize_token


def char_class(token: str) -> str:
    s = token.strip()
    if not s:
        return "newline" if "\n" in token else "whitespace"
    if s.isdigit():
        return "number"
    if all(not c.isalnum() for c in s):
        return "punctuation"
    if s[0].isupper():
        return "capitalized word"
    return "lowercase word"


def word_at(trace: Trace, index: int) -> str:
    """The whole word around token ``index`` (BPE pieces joined), with its leading space."""
    tokens, special = trace.tokens, trace.special

    def glued(i: int) -> bool:  # token i continues the word of token i - 1
        return (i not in special and (i - 1) not in special and tokens[i][:1].isalnum()
                and tokens[i - 1][-1:].isalnum())

    lo = index
    while lo > 0 and glued(lo):
        lo -= 1
    hi = index + 1
    while hi < len(tokens) and glued(hi):
        hi += 1
    return "".join(tokens[lo:hi])


@dataclass(frozen=True)
class Candidate:
    """One way of reading the exemplars: a token (raw form as the tokenizer writes
    it), the word it sits in, and how many exemplars peak on it."""

    token: str
    word: str
    share: float


@dataclass(frozen=True)
class Profile:
    n: int
    tokens: list[Candidate]  # by share, descending
    prev: Counter[str]  # raw token before the peak
    positions: Counter[int]
    classes: Counter[str]
    contexts: list[str]  # text up to and including the peak, per exemplar
    peaks: list[str]  # the raw peak token of each context

    @property
    def top(self) -> Candidate | None:
        return self.tokens[0] if self.tokens else None

    def dominant_prev(self, min_share: float) -> str | None:
        if not self.prev:
            return None
        token, count = self.prev.most_common(1)[0]
        return token if count / self.n >= min_share and token.strip() else None

    def dominant_position(self) -> tuple[int, float]:
        if not self.positions:
            return 0, 0.0
        pos, count = self.positions.most_common(1)[0]
        return pos, count / self.n


def profile(exemplars: Sequence[Trace], fire_threshold: float) -> Profile:
    firing = [t for t in exemplars if t.max_activation > 0 and t.max_activation >= fire_threshold]
    n = max(len(firing), 1)
    by_norm: Counter[str] = Counter()
    raw_forms: dict[str, Counter[str]] = {}
    words: dict[str, Counter[str]] = {}
    prev: Counter[str] = Counter()
    positions: Counter[int] = Counter()
    classes: Counter[str] = Counter()
    contexts, peaks = [], []
    for t in firing:
        i = t.argmax
        raw = t.tokens[i]
        key = normalize_token(raw) or raw
        by_norm[key] += 1
        raw_forms.setdefault(key, Counter())[raw] += 1
        words.setdefault(key, Counter())[word_at(t, i)] += 1
        if i > 0 and (i - 1) not in t.special:
            prev[t.tokens[i - 1]] += 1
        positions[i] += 1
        classes[char_class(raw)] += 1
        start = max(0, i - 8)
        contexts.append("".join(tok for j, tok in enumerate(t.tokens[start : i + 1], start) if j not in t.special))
        peaks.append(raw)
    candidates = [
        Candidate(raw_forms[k].most_common(1)[0][0], words[k].most_common(1)[0][0], c / n)
        for k, c in by_norm.most_common()
    ]
    return Profile(len(firing), candidates, prev, positions, classes, contexts, peaks)
