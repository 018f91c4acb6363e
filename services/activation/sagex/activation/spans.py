"""Where each token sits in the text it came from, as character offsets.

Decoding one token at a time turns a multi-byte character split over several
byte-level tokens into U+FFFD, and loses SentencePiece spaces, so per-token
texts did not join back into the input. Spans from the tokenizer's offset
mapping do: they are made contiguous and cover the whole text, so
``"".join(text[s:e] for s, e in spans) == text``.

A character split over several tokens belongs to the token that completes it
(the first point where the model has seen all of it); the tokens before it get
an empty span. Special tokens added in front (BOS) get an empty span at 0.
"""

from __future__ import annotations

from collections.abc import Sequence


def token_spans(offsets: Sequence[tuple[int, int]], text_length: int, prefix: int = 0) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` character spans, ``prefix`` empty ones first, then one per
    entry of ``offsets`` (the tokenizer's offset mapping of the text's own tokens)."""
    spans = [(0, 0)] * prefix
    done = 0  # characters given out so far
    for i, (_, end) in enumerate(offsets):
        if i + 1 < len(offsets) and offsets[i + 1][0] < end:
            end = offsets[i + 1][0]  # the next token still holds part of this character
        if i + 1 == len(offsets):
            end = text_length  # whatever the tokenizer left uncovered at the end
        end = min(max(end, done), text_length)
        spans.append((done, end))
        done = end
    return spans


def span_texts(text: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    return [text[s:e] for s, e in spans]


__all__ = ["span_texts", "token_spans"]
