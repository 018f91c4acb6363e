"""Activations fetched over gRPC equal sae-lens ``SAE.encode`` applied to the hidden
states transformers gives at the hook, for the embedded SAE and for random SAEs
of every architecture; concurrent batched streams equal single requests."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from sagex.activation.assets.model import ensure_embedded_model
from sagex.activation.assets.paths import EMBEDDED_SAE_DIR, EMBEDDED_SAE_ID
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.codec import unpack_sparse
from tests.conftest import TEXTS

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def hf_reference():  # type: ignore[no-untyped-def]
    """The unmodified transformers model: hidden_states[L + 1] is decoder layer L's output."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_embedded_model()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    @torch.inference_mode()
    def hidden(text: str, layer: int) -> tuple[list[int], torch.Tensor]:
        ids = tok(text, add_special_tokens=False).input_ids
        out = model(torch.tensor([ids]), output_hidden_states=True)
        return ids, out.hidden_states[layer + 1][0]

    return hidden


def _sae_lens_encode(folder: Path, x: torch.Tensor) -> torch.Tensor:
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(folder), device="cpu", dtype="float32")
    with torch.inference_mode():
        return sae.encode(x)


def _hook_layer(folder: Path) -> int:
    import json

    return int(json.loads((folder / "cfg.json").read_text())["metadata"]["hook_name"].split(".")[-1])


async def _stream(  # type: ignore[no-untyped-def]
    stub, requests: list[pb.StreamActivationsRequest]
) -> dict[str, dict[int, list[pb.StreamActivationsResponse]]]:
    async def gen():  # type: ignore[no-untyped-def]
        for r in requests:
            yield r

    out: dict[str, dict[int, list[pb.StreamActivationsResponse]]] = {}
    async for msg in stub.StreamActivations(gen()):
        out.setdefault(msg.batch_id, {}).setdefault(msg.text_index, []).append(msg)
    return out


def _dense(chunks: list[pb.StreamActivationsResponse], d_sae: int) -> tuple[list[int], np.ndarray]:
    ids: list[int] = []
    rows = []
    for c in sorted(chunks, key=lambda c: c.token_start):
        assert c.token_start == len(ids), "chunks must tile the text without gaps"
        ids += list(c.tokens.ids)
        offsets, feats, vals = unpack_sparse(c.activations)
        dense = np.zeros((c.activations.num_tokens, d_sae), np.float32)
        for t in range(c.activations.num_tokens):
            dense[t, feats[offsets[t] : offsets[t + 1]]] = vals[offsets[t] : offsets[t + 1]]
        rows.append(dense)
    assert chunks[-1].text_complete
    return ids, np.concatenate(rows)


@pytest.mark.parametrize("sae_id", [EMBEDDED_SAE_ID, "rand-standard", "rand-topk", "rand-jumprelu", "rand-gated"])
async def test_grpc_matches_sae_lens_encode(stub, hf_reference, random_saes, sae_id) -> None:  # type: ignore[no-untyped-def]
    folder = EMBEDDED_SAE_DIR if sae_id == EMBEDDED_SAE_ID else random_saes[sae_id]
    layer = _hook_layer(folder)
    got = await _stream(stub, [pb.StreamActivationsRequest(batch_id="b", sae_id=sae_id, texts=TEXTS,
                                                           threshold=pb.ThresholdSelection())])
    active_total = 0
    for i, text in enumerate(TEXTS):
        ref_ids, hidden = hf_reference(text, layer)
        expected = _sae_lens_encode(folder, hidden).numpy()
        ids, dense = _dense(got["b"][i], expected.shape[1])
        assert ids == ref_ids
        np.testing.assert_allclose(dense, expected, rtol=1e-4, atol=1e-4)
        active_total += int((expected > 0).sum())
    assert active_total > 0, "a conformance check on all-zero activations proves nothing"


async def test_feature_and_topk_selections_agree_with_dense(stub, hf_reference) -> None:  # type: ignore[no-untyped-def]
    text = TEXTS[3]
    _, hidden = hf_reference(text, _hook_layer(EMBEDDED_SAE_DIR))
    expected = _sae_lens_encode(EMBEDDED_SAE_DIR, hidden).numpy()
    top_features = [int(f) for f in np.argsort(-expected.max(0))[:6]] + [0, 4607]
    got = await _stream(stub, [
        pb.StreamActivationsRequest(batch_id="f", sae_id=EMBEDDED_SAE_ID, texts=[text],
                                    features=pb.FeatureIdSelection(feature_ids=top_features)),
        pb.StreamActivationsRequest(batch_id="k", sae_id=EMBEDDED_SAE_ID, texts=[text], top_k=pb.TopKSelection(k=3)),
    ])
    _, dense_f = _dense(got["f"][0], expected.shape[1])
    np.testing.assert_allclose(dense_f[:, top_features], expected[:, top_features], rtol=1e-4, atol=1e-4)
    assert not np.delete(dense_f, top_features, axis=1).any(), "unrequested features must not be returned"
    _, dense_k = _dense(got["k"][0], expected.shape[1])
    for t in range(expected.shape[0]):
        nz = np.flatnonzero(dense_k[t])
        assert len(nz) == min(3, int((expected[t] > 0).sum()))
        kth = np.sort(expected[t])[-3]
        assert (expected[t, nz] >= kth - 1e-4).all()
        np.testing.assert_allclose(dense_k[t, nz], expected[t, nz], rtol=1e-4, atol=1e-4)


async def test_concurrent_streams_equal_single_requests(stub) -> None:  # type: ignore[no-untyped-def]
    texts = TEXTS + [t.upper() for t in TEXTS] + [" ".join(TEXTS)]
    selection = {"top_k": pb.TopKSelection(k=8)}
    single = []
    for i, t in enumerate(texts):
        res = await _stream(stub, [pb.StreamActivationsRequest(batch_id=f"s{i}", sae_id=EMBEDDED_SAE_ID, texts=[t],
                                                               **selection)])
        single.append(_dense(res[f"s{i}"][0], 4608))

    async def one_stream(n: int):  # type: ignore[no-untyped-def]
        reqs = [pb.StreamActivationsRequest(batch_id=f"c{n}-{j}", sae_id=EMBEDDED_SAE_ID, texts=texts[j::3],
                                            **selection) for j in range(3)]
        return await _stream(stub, reqs)

    results = await asyncio.gather(*(one_stream(n) for n in range(6)))
    for n, res in enumerate(results):
        for j in range(3):
            for k, idx in enumerate(range(j, len(texts), 3)):
                ids, dense = _dense(res[f"c{n}-{j}"][k], 4608)
                assert ids == single[idx][0]
                np.testing.assert_allclose(dense, single[idx][1], rtol=1e-4, atol=1e-5)


async def test_large_results_arrive_in_chunks_that_reassemble(activation_config, runtime, hf_reference) -> None:  # type: ignore[no-untyped-def]
    import grpc

    from sagex.activation.server import running_activation_server
    from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc

    small = dataclasses.replace(activation_config.with_server(port=0), max_response_bytes=4096)
    text = " ".join(TEXTS * 3)
    async with running_activation_server(small, runtime) as (running, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            got = await _stream(pb_grpc.ActivationServiceStub(channel), [
                pb.StreamActivationsRequest(batch_id="x", sae_id=EMBEDDED_SAE_ID, texts=[text],
                                            threshold=pb.ThresholdSelection())
            ])
    chunks = got["x"][0]
    assert len(chunks) > 3
    assert all(c.ByteSize() <= 4096 for c in chunks)
    assert [c.text_complete for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].batch_complete and not any(c.batch_complete for c in chunks[:-1])
    _, hidden = hf_reference(text, _hook_layer(EMBEDDED_SAE_DIR))
    _, dense = _dense(chunks, 4608)
    np.testing.assert_allclose(dense, _sae_lens_encode(EMBEDDED_SAE_DIR, hidden).numpy(), rtol=1e-4, atol=1e-4)
