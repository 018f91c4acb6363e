"""Per-token activation traces of one feature, as the agent reasons about them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sagex.api.codec import counted_positions
from sagex.api.common.v1 import types_pb2


@dataclass(frozen=True)
class Trace:
    """One text's tokens and the feature's activation at each of them.

    ``peak`` ignores special tokens and position 0 (the attention sink SAEs are
    trained without), the same rule the activation service uses for exemplar
    maxima, so probe and exemplar scales agree."""

    text: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    special: frozenset[int]
    values: np.ndarray  # float32[len(tokens)]

    @property
    def content_positions(self) -> list[int]:
        """Positions that count: never position 0, even in a one-token text, where
        the attention-sink value would read as a huge activation."""
        return counted_positions(len(self.tokens), self.special)

    @property
    def argmax(self) -> int:
        positions = self.content_positions
        if not positions:
            return 0
        return positions[int(np.argmax(self.values[positions]))]

    @property
    def max_activation(self) -> float:
        positions = self.content_positions
        return float(self.values[positions].max()) if positions else 0.0

    @property
    def peak_token(self) -> str:
        return self.tokens[self.argmax] if self.tokens else ""

    def window(self, center: int, radius: int = 5) -> list[tuple[str, float]]:
        lo, hi = max(0, center - radius), min(len(self.tokens), center + radius + 1)
        return [(self.tokens[i], float(self.values[i])) for i in range(lo, hi) if i not in self.special]

    def snippet(self, radius: int = 5) -> str:
        return "".join(tok for tok, _ in self.window(self.argmax, radius))

    def to_proto(self, feature_id: int) -> tuple[types_pb2.TokenSequence, types_pb2.FeatureTrace]:
        tokens = types_pb2.TokenSequence(ids=self.token_ids, texts=self.tokens, special_positions=sorted(self.special))
        trace = types_pb2.FeatureTrace(feature_id=feature_id, values=self.values.astype("<f4").tobytes())
        return tokens, trace

    @classmethod
    def from_proto(cls, text: str, tokens: types_pb2.TokenSequence, values: np.ndarray) -> Trace:
        return cls(
            text=text,
            token_ids=tuple(tokens.ids),
            tokens=tuple(tokens.texts),
            special=frozenset(tokens.special_positions),
            values=np.asarray(values, dtype=np.float32),
        )


def normalize_token(token: str) -> str:
    """Tokens compared as words: case and surrounding whitespace ignored."""
    return token.strip().lower()
