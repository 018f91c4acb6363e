"""Wire form of activations: raw little-endian bytes, chunked under a size limit."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sagex.activation.encode import SparseRows
from sagex.activation.lm import Tokenized
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.common.v1 import types_pb2

# Fixed per-message and per-token overheads (ids, token text framing, offsets).
_MESSAGE_OVERHEAD = 256
_TOKEN_OVERHEAD = 16
_BYTES_PER_ENTRY = 8  # uint32 id + float32 value


def sparse_to_proto(rows: SparseRows) -> types_pb2.SparseActivations:
    offsets = rows.row_offsets.numpy()
    return types_pb2.SparseActivations(
        num_tokens=rows.num_rows,
        row_offsets=(offsets - offsets[0]).astype("<u4").tobytes(),
        feature_ids=rows.feature_ids.numpy().astype("<u4").tobytes(),
        values=rows.values.numpy().astype("<f4").tobytes(),
    )


def tokens_to_proto(tok: Tokenized, start: int = 0, stop: int | None = None) -> types_pb2.TokenSequence:
    stop = len(tok.ids) if stop is None else stop
    spans = tok.spans[start:stop] if tok.spans is not None else []
    return types_pb2.TokenSequence(
        ids=tok.ids[start:stop],
        texts=tok.texts[start:stop],
        special_positions=[p - start for p in tok.special_positions if start <= p < stop],
        char_starts=[s for s, _ in spans],
        char_ends=[e for _, e in spans],
    )


def chunk_bounds(tok: Tokenized, rows: SparseRows, max_bytes: int) -> Iterator[tuple[int, int]]:
    """Token ranges whose messages stay under ``max_bytes`` (a single huge token
    row still gets its own message rather than failing)."""
    nnz = rows.row_offsets.diff().numpy()
    budget = max_bytes - _MESSAGE_OVERHEAD
    start, size = 0, 0
    for t in range(len(tok.ids)):
        cost = _TOKEN_OVERHEAD + len(tok.texts[t].encode()) + _BYTES_PER_ENTRY * int(nnz[t])
        if t > start and size + cost > budget:
            yield start, t
            start, size = t, 0
        size += cost
    yield start, len(tok.ids)


def text_responses(
    batch_id: str, text_index: int, tok: Tokenized, rows: SparseRows, max_bytes: int
) -> Iterator[pb.StreamActivationsResponse]:
    bounds = list(chunk_bounds(tok, rows, max_bytes))
    for n, (start, stop) in enumerate(bounds):
        yield pb.StreamActivationsResponse(
            batch_id=batch_id,
            text_index=text_index,
            token_start=start,
            tokens=tokens_to_proto(tok, start, stop),
            activations=sparse_to_proto(rows.slice_rows(start, stop)),
            text_complete=n == len(bounds) - 1,
        )


def unpack_sparse(msg: types_pb2.SparseActivations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row_offsets, feature_ids, values) as numpy arrays; the inverse of sparse_to_proto."""
    return (
        np.frombuffer(msg.row_offsets, dtype="<u4"),
        np.frombuffer(msg.feature_ids, dtype="<u4"),
        np.frombuffer(msg.values, dtype="<f4"),
    )
