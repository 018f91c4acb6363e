"""Token texts and character offsets: whitespace-only texts are accepted, and per-token
texts join back into the input, multi-byte characters whole (no U+FFFD)."""

from __future__ import annotations

import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.spans import token_spans
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.common.v1 import types_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXTS = [" ", "  \n\t ", "日本語 🎉 café", "naïve a\u0301 Ελληνικά — “quotes”", "In the beginning"]


def check_joins(text: str, tokens: types_pb2.TokenSequence) -> None:
    assert "".join(tokens.texts) == text, list(tokens.texts)
    assert "\ufffd" not in "".join(tokens.texts)
    assert len(tokens.char_starts) == len(tokens.char_ends) == len(tokens.ids) == len(tokens.texts)
    position = 0
    for start, end, piece in zip(tokens.char_starts, tokens.char_ends, tokens.texts, strict=True):
        assert start == position and text[start:end] == piece  # contiguous, and the text is the span
        position = end
    assert position == len(text)


async def test_tokenize_accepts_whitespace_and_joins_back(stub) -> None:  # type: ignore[no-untyped-def]
    response = await stub.Tokenize(pb.TokenizeRequest(texts=TEXTS))
    for text, tokens in zip(TEXTS, response.tokens, strict=True):
        assert len(tokens.ids) >= 1
        check_joins(text, tokens)


async def test_stream_tokens_carry_offsets_and_activations(stub) -> None:  # type: ignore[no-untyped-def]
    request = pb.StreamActivationsRequest(batch_id="spans", sae_id=EMBEDDED_SAE_ID, texts=TEXTS,
                                          top_k=pb.TopKSelection(k=2))
    got = {m.text_index: m async for m in stub.StreamActivations(iter([request]), timeout=120)}
    for i, text in enumerate(TEXTS):
        check_joins(text, got[i].tokens)
        assert got[i].activations.num_tokens == len(got[i].tokens.ids)


async def test_token_id_input_has_no_offsets(stub) -> None:  # type: ignore[no-untyped-def]
    request = pb.StreamActivationsRequest(batch_id="ids", sae_id=EMBEDDED_SAE_ID,
                                          token_ids=[pb.TokenIds(ids=[504, 3, 99])], top_k=pb.TopKSelection(k=2))
    [msg] = [m async for m in stub.StreamActivations(iter([request]), timeout=120)]
    assert list(msg.tokens.ids) == [504, 3, 99] and not msg.tokens.char_starts and not msg.tokens.char_ends


async def test_a_split_character_belongs_to_the_token_that_completes_it() -> None:
    # Byte-level tokens of "é🎉": the offset mapping gives each byte-token the whole character.
    text = "é🎉"
    spans = token_spans([(0, 1), (0, 1), (1, 2), (1, 2), (1, 2)], len(text), prefix=1)
    assert spans == [(0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (1, 2)]
