"""Reading integer answers, and the model's probabilities for them, out of a reply.

The scorers ask for one flat JSON array of small integers ("[0, 0, 7, 10]"). The
array's entries are located in the reply text; when the endpoint returned
logprobs, the generated token that starts each entry's digits is found and the
alternatives at that position that are themselves allowed values give the
entry's distribution (renormalised over those values). Anything that is not an
allowed integer is a missing entry (None), never a zero.

Tokenisers that split "10" into "1" + "0" fold P(10) into P(1) at the first
position; when the sampled path is that split, the second position's P("0")
separates them again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sagex.llm import TokenLogprob

_ARRAY = re.compile(r"\[([^\[\]]*)\]", re.DOTALL)
_INT = re.compile(r"\s*\"?(-?\d+)\"?\s*")


@dataclass(frozen=True)
class Entry:
    """One array entry: the integer written (None if not an allowed integer) and,
    with logprobs, the probability of each allowed value at that position."""

    value: int | None
    distribution: dict[int, float] | None = None

    @property
    def expected(self) -> float | None:
        """Expected value under the distribution, else the written value."""
        if self.distribution:
            return sum(k * p for k, p in self.distribution.items())
        return None if self.value is None else float(self.value)

    def probability(self, value: int) -> float | None:
        return None if not self.distribution else self.distribution.get(value, 0.0)


def read_array(text: str, logprobs: Sequence[TokenLogprob] | None, allowed: range) -> list[Entry] | None:
    """The entries of the first JSON array in ``text``, or None when there is none."""
    arrays = list(_ARRAY.finditer(text))
    if not arrays:
        return None
    # The answer is the longest flat array; a stray "[1]" in prose does not win.
    match = max(arrays, key=lambda a: (a.group(1).count(","), -a.start()))
    body_start = match.start(1)
    offsets = _token_offsets(text, logprobs)
    entries: list[Entry] = []
    if not match.group(1).strip():
        return entries
    pos = body_start
    for raw in match.group(1).split(","):
        m = _INT.fullmatch(raw)
        value = int(m.group(1)) if m and int(m.group(1)) in allowed else None
        dist = None
        if value is not None and offsets is not None and logprobs is not None and m is not None:
            dist = _distribution(logprobs, offsets, pos + m.start(1), allowed)
        entries.append(Entry(value, dist))
        pos += len(raw) + 1
    return entries


def _token_offsets(text: str, logprobs: Sequence[TokenLogprob] | None) -> list[int] | None:
    """Start offset of each generated token in ``text``; None when the tokens do
    not spell the text (then positions cannot be matched and logprobs are unused)."""
    if not logprobs:
        return None
    starts, pos = [], 0
    for lp in logprobs:
        starts.append(pos)
        pos += len(lp.token)
    if "".join(lp.token for lp in logprobs) != text:
        return None
    return starts


def _distribution(logprobs: Sequence[TokenLogprob], offsets: list[int], digit_pos: int,
                  allowed: range) -> dict[int, float] | None:
    # The token that contains the entry's first digit.
    index = max(i for i, start in enumerate(offsets) if start <= digit_pos)
    token = logprobs[index]
    prefix = token.token[: digit_pos - offsets[index]]
    first = token.token[len(prefix):][:1]
    if not (first.isascii() and first.isdigit()):
        return None
    lead = "".join(prefix.split())  # " 3" and "3" after a comma are the same answer
    probs: dict[int, float] = {}
    alternatives = token.top or ((token.token, token.logprob),)
    if all(alt != token.token for alt, _ in alternatives):
        alternatives = (*alternatives, (token.token, token.logprob))
    for alt, logprob in alternatives:
        compact = "".join(alt.split())
        digits = compact[len(lead):]
        # isascii: "²".isdigit() is true but int("²") fails
        if compact.startswith(lead) and digits.isascii() and digits.isdigit() and int(digits) in allowed:
            probs[int(digits)] = probs.get(int(digits), 0.0) + math.exp(logprob)
    if not probs:
        return None
    _split_ten(probs, logprobs, index, prefix, allowed)
    total = sum(probs.values())
    return {k: p / total for k, p in probs.items()}


def _split_ten(probs: dict[int, float], logprobs: Sequence[TokenLogprob], index: int, prefix: str,
               allowed: range) -> None:
    """When "10" came out as "1" then "0", share P(1) between 1 and 10 by the
    second position's probability of "0"."""
    if 10 not in allowed or 1 not in probs or 10 in probs or index + 1 >= len(logprobs):
        return
    if logprobs[index].token[len(prefix):].strip() != "1" or logprobs[index + 1].token != "0":
        return
    nxt = logprobs[index + 1]
    p_zero = sum(math.exp(lp) for alt, lp in (nxt.top or ((nxt.token, nxt.logprob),)) if alt == "0")
    p_zero = min(p_zero, 1.0)
    probs[10] = probs[1] * p_zero
    probs[1] = probs[1] * (1.0 - p_zero)


__all__ = ["Entry", "read_array"]
