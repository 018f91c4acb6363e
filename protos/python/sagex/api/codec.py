"""The wire form of activations, read and written in one place.

Activations travel as CSR (``SparseActivations``: little-endian uint32 row offsets and
feature ids, float32 values), and a long text's tokens arrive as several
``StreamActivationsResponse`` chunks that share a ``text_index``. Every reader (the SDK,
the services' shared client, the demo) and the activation service's writer use these
functions, so the byte layout and the reassembly rule exist once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.common.v1 import types_pb2

__all__ = ["AssembledText", "assemble_texts", "counted_positions", "dense_column", "dense_columns", "pack_sparse",
           "unpack_sparse"]


def pack_sparse(row_offsets: np.ndarray, feature_ids: np.ndarray, values: np.ndarray) -> types_pb2.SparseActivations:
    """CSR arrays to the message; offsets may start anywhere (a slice of a larger CSR)."""
    offsets = np.asarray(row_offsets, dtype=np.int64)
    return types_pb2.SparseActivations(
        num_tokens=len(offsets) - 1,
        row_offsets=(offsets - offsets[0]).astype("<u4").tobytes(),
        feature_ids=np.asarray(feature_ids).astype("<u4").tobytes(),
        values=np.asarray(values).astype("<f4").tobytes(),
    )


def unpack_sparse(msg: types_pb2.SparseActivations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row_offsets, feature_ids, values), read-only views of the message's bytes."""
    return (np.frombuffer(msg.row_offsets, "<u4"), np.frombuffer(msg.feature_ids, "<u4"),
            np.frombuffer(msg.values, "<f4"))


def dense_columns(msg: types_pb2.SparseActivations, features: Iterable[int]) -> dict[int, np.ndarray]:
    """Each feature's value at every token row (0 where it is not active)."""
    offsets, ids, vals = unpack_sparse(msg)
    rows = np.repeat(np.arange(msg.num_tokens), np.diff(offsets))
    out = {}
    for f in features:
        column = np.zeros(msg.num_tokens, np.float32)
        hit = ids == f
        column[rows[hit]] = vals[hit]
        out[f] = column
    return out


def dense_column(msg: types_pb2.SparseActivations, feature: int) -> np.ndarray:
    return dense_columns(msg, (feature,))[feature]


def counted_positions(num_tokens: int, special: Iterable[int]) -> list[int]:
    """Token positions whose activations count: not special tokens and never position 0,
    the attention sink SAEs are trained without (its value would read as a huge
    activation). Exemplar maxima, probe peaks and the scorers' truths all use this rule."""
    skip = set(special)
    return [i for i in range(1, num_tokens) if i not in skip]


@dataclass
class AssembledText:
    """One text of a StreamActivations batch, its chunks joined back together."""

    token_ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # each token's characters of the input text
    special: set[int] = field(default_factory=set)
    chunks: list[types_pb2.SparseActivations] = field(default_factory=list)
    complete: bool = False

    def columns(self, features: Sequence[int]) -> dict[int, np.ndarray]:
        """The given features' values over the whole text."""
        parts = [dense_columns(c, features) for c in self.chunks]
        return {f: np.concatenate([p[f] for p in parts]) if parts else np.zeros(0, np.float32) for f in features}


def assemble_texts(messages: Iterable[apb.StreamActivationsResponse]) -> dict[int, AssembledText]:
    """StreamActivationsResponse chunks (of one batch) joined per ``text_index``.

    Chunks of one text arrive in order; ``token_start`` places each one, and a chunk
    that does not continue where the last one stopped is a protocol error, not
    something to paper over."""
    texts: dict[int, AssembledText] = {}
    for msg in messages:
        text = texts.setdefault(msg.text_index, AssembledText())
        start = msg.token_start
        if start != len(text.tokens):
            raise ValueError(f"text {msg.text_index}: chunk starts at token {start}, "
                             f"expected {len(text.tokens)}")
        seq = msg.tokens
        text.token_ids.extend(seq.ids)
        text.tokens.extend(seq.texts)
        text.spans.extend(zip(seq.char_starts, seq.char_ends, strict=True))
        text.special.update(p + start for p in seq.special_positions)
        text.chunks.append(msg.activations)
        text.complete = msg.text_complete
    return texts
