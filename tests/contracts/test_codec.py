"""The wire codec every reader and the activation service's writer share."""

from __future__ import annotations

import numpy as np
import pytest

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.codec import assemble_texts, counted_positions, dense_columns, pack_sparse, unpack_sparse
from sagex.api.common.v1 import types_pb2


def _csr(rows: list[dict[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(r) for r in rows])
    ids = np.array([f for r in rows for f in sorted(r)], np.uint32)
    vals = np.array([r[f] for r in rows for f in sorted(r)], np.float32)
    return offsets, ids, vals


def test_pack_then_unpack_is_exact_and_rebases_a_slice() -> None:
    rows = [{3: 1.5}, {}, {1: 0.25, 7: -2.0}]
    offsets, ids, vals = _csr(rows)
    msg = pack_sparse(offsets[1:] + 0, ids[1:], vals[1:])  # rows 1.. as a slice: offsets start at 1
    got_offsets, got_ids, got_vals = unpack_sparse(msg)
    assert msg.num_tokens == 2 and got_offsets.tolist() == [0, 0, 2]
    assert got_ids.tolist() == [1, 7] and got_vals.tolist() == [0.25, -2.0]
    cols = dense_columns(pack_sparse(offsets, ids, vals), [1, 3, 9])
    assert cols[3].tolist() == [1.5, 0, 0] and cols[1].tolist() == [0, 0, 0.25] and not cols[9].any()


def _chunk(text_index: int, start: int, tokens: list[str], special: list[int], rows: list[dict[int, float]],
           complete: bool) -> apb.StreamActivationsResponse:
    return apb.StreamActivationsResponse(
        text_index=text_index, token_start=start, text_complete=complete,
        tokens=types_pb2.TokenSequence(ids=list(range(start, start + len(tokens))), texts=tokens,
                                       special_positions=special),
        activations=pack_sparse(*_csr(rows)))


def test_chunks_of_interleaved_texts_join_back() -> None:
    msgs = [_chunk(0, 0, ["<s>", "a"], [0], [{}, {5: 1.0}], False),
            _chunk(1, 0, ["b"], [], [{5: 2.0}], True),
            _chunk(0, 2, ["c", "</s>"], [1], [{5: 3.0}, {}], True)]
    texts = assemble_texts(msgs)
    assert texts[0].tokens == ["<s>", "a", "c", "</s>"] and texts[0].token_ids == [0, 1, 2, 3]
    assert texts[0].special == {0, 3} and texts[0].complete
    assert texts[0].columns([5])[5].tolist() == [0, 1.0, 3.0, 0] and texts[1].columns([5])[5].tolist() == [2.0]


def test_a_chunk_out_of_place_is_an_error_not_a_silent_misalignment() -> None:
    with pytest.raises(ValueError, match="chunk starts at token 5, expected 2"):
        assemble_texts([_chunk(0, 0, ["a", "b"], [], [{}, {}], False), _chunk(0, 5, ["c"], [], [{}], True)])


def test_counted_positions_skip_position_zero_and_special_tokens() -> None:
    assert counted_positions(5, {0, 3}) == [1, 2, 4]
    assert counted_positions(1, set()) == []  # a one-token text has nothing that counts
