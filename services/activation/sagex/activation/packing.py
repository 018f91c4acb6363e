"""Wire form of activations: raw little-endian bytes, chunked under a size limit."""

from __future__ import annotations

from collections.abc import Iterator

from sagex.activation.encode import SparseRows
from sagex.activation.lm import Tokenized
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.codec import pack_sparse
from sagex.api.common.v1 import types_pb2

# Fixed per-message and per-token overheads (ids, token text framing, offsets).
_MESSAGE_OVERHEAD = 256
_TOKEN_OVERHEAD = 16
_BYTES_PER_ENTRY = 8  # uint32 id + float32 value


def sparse_to_proto(rows: SparseRows) -> types_pb2.SparseActivations:
    return pack_sparse(rows.row_offsets.numpy(), rows.feature_ids.numpy(), rows.values.numpy())


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

