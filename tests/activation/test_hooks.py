"""Hook points and TransformerLens conventions, proven against the reference stack.

One activation server serves random SAELens SAEs at every hook kind (named the
TransformerLens way and the HF way, plus a transcoder and SAEs whose cfg records
TransformerLens weight processing). Each one's gRPC activations are compared with
sae-lens ``SAE.encode`` applied to the cache of a TransformerLens model of the same
weights, built offline here (processed or unprocessed, as the SAE's cfg says):
token ids equal, active sets equal, max error stated (run with -s for the table).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import torch

from sagex.activation.assets.model import ensure_embedded_model
from sagex.api.activation.v1 import activation_service_pb2 as pb
from tests.activation.test_conformance import _dense, _stream
from tests.builders import save_random_sae
from tests.conftest import D_MODEL, TEXTS

asyncio_module = pytest.mark.asyncio(loop_scope="module")

TL_LAYERS = 5  # the deepest hook below is in block 4
CWW = {"model_from_pretrained_kwargs": {"center_writing_weights": True}}
FOLD = {"model_from_pretrained_kwargs": {"fold_ln": True}}

# id -> (architecture, hook name in the SAE's cfg, TransformerLens hook it must equal, processed reference?, metadata)
CASES: dict[str, tuple[str, str, str, bool, dict]] = {
    "embed": ("standard", "hook_embed", "hook_embed", False, {}),
    "pre0": ("topk", "blocks.0.hook_resid_pre", "blocks.0.hook_resid_pre", False, {}),
    "pre2": ("jumprelu", "blocks.2.hook_resid_pre", "blocks.2.hook_resid_pre", False, {}),
    "attn1": ("standard", "blocks.1.hook_attn_out", "blocks.1.hook_attn_out", False, {}),
    "mid2": ("gated", "blocks.2.hook_resid_mid", "blocks.2.hook_resid_mid", False, {}),
    "mlp2": ("topk", "blocks.2.hook_mlp_out", "blocks.2.hook_mlp_out", False, {}),
    "z2": ("standard", "blocks.2.attn.hook_z", "blocks.2.attn.hook_z", False, {"reshape_activations": "hook_z"}),
    "norm3": ("standard", "blocks.3.ln2.hook_normalized", "blocks.3.ln2.hook_normalized", False, {}),
    "mlpin3": ("standard", "blocks.3.mlp.hook_in", "blocks.3.mlp.hook_in", False, {}),
    "tc3": ("jumprelu_transcoder", "blocks.3.ln2.hook_normalized", "blocks.3.ln2.hook_normalized", False,
            {"hook_name_out": "blocks.3.hook_mlp_out"}),
    "z2-head3": ("topk", "blocks.2.attn.hook_z", "blocks.2.attn.hook_z", False, {"hook_head_index": 3, "d_in": 64}),
    "hf-mlp1": ("standard", "model.layers.1.mlp", "blocks.1.hook_mlp_out", False, {}),
    "hf-post0": ("topk", "layers.0", "blocks.0.hook_resid_post", False, {}),
    "hf-oproj1": ("standard", "model.layers.1.self_attn.o_proj.input", "blocks.1.attn.hook_z", False, {}),
    "cww-post4": ("standard", "blocks.4.hook_resid_post", "blocks.4.hook_resid_post", True, CWW),
    "fold-mlpin1": ("jumprelu", "blocks.1.mlp.hook_in", "blocks.1.mlp.hook_in", True, FOLD),
}


@pytest.fixture(scope="module")
def hook_saes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hook-saes")
    out = {}
    for i, (sid, (arch, hook, _, _, meta)) in enumerate(CASES.items()):
        meta = dict(meta)
        d_in = meta.pop("d_in", D_MODEL)
        out[sid] = save_random_sae(root / sid, arch, d_in, 96, hook, seed=100 + i, **meta)
    return out


@pytest.fixture(scope="module")
def tl_models():  # type: ignore[no-untyped-def]
    from tests.activation.tl_reference import hooked_smollm2

    folder = ensure_embedded_model()
    return {False: hooked_smollm2(folder, TL_LAYERS, processed=False),
            True: hooked_smollm2(folder, TL_LAYERS, processed=True)}


@pytest.fixture(scope="module")
def hook_runtime(hook_saes, mining_corpus, tmp_path_factory):  # type: ignore[no-untyped-def]
    from sagex.activation.config import ActivationConfig
    from sagex.activation.server import build_runtime
    from sagex.server.lifecycle import ServerOptions

    config = ActivationConfig(
        saes=hook_saes, embedded_sae=False, corpus_dir=mining_corpus, device="cpu",
        mining_cache_dir=tmp_path_factory.mktemp("hook-mining"),
        server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0),
    )
    rt = build_runtime(config)
    yield config, rt
    rt.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hook_stub(hook_runtime):  # type: ignore[no-untyped-def]
    import grpc

    from sagex.activation.server import running_activation_server
    from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc

    config, rt = hook_runtime
    async with running_activation_server(config, rt) as (running, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.ActivationServiceStub(channel)


def _reference(folder: Path, model, tl_hook: str, ids: list[int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(folder), device="cpu", dtype="float32")
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=[tl_hook])
        x = cache[tl_hook][0]
        head = sae.cfg.metadata.hook_head_index
        if head is not None:
            x = x[..., head, :]  # SAELens's activation store: one head of the per-head tensor
        elif tl_hook.endswith("hook_z") and sae.cfg.reshape_activations != "hook_z":
            x = x.flatten(-2)  # an HF-named o_proj-input SAE reads the flat, head-major tensor
        return sae.encode(x).numpy()


@asyncio_module
async def test_every_hook_kind_matches_sae_lens_on_transformer_lens(hook_stub, hook_saes, tl_models) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ensure_embedded_model())
    requests = [pb.StreamActivationsRequest(batch_id=sid, sae_id=sid, texts=TEXTS, threshold=pb.ThresholdSelection())
                for sid in CASES]
    got = await _stream(hook_stub, requests)
    table = []
    for sid, (_, _, tl_hook, processed, _) in CASES.items():
        worst, active = 0.0, 0
        for i, text in enumerate(TEXTS):
            ref_ids = tok(text, add_special_tokens=False).input_ids
            expected = _reference(hook_saes[sid], tl_models[processed], tl_hook, ref_ids)
            ids, dense = _dense(got[sid][i], expected.shape[1])
            assert ids == ref_ids, sid
            assert ((dense > 0) == (expected > 0)).all(), f"{sid}: active sets differ"
            scale = max(1.0, float(np.abs(expected).max()))
            worst = max(worst, float(np.abs(dense - expected).max()) / scale)
            active += int((expected > 0).sum())
        table.append((sid, tl_hook, "processed" if processed else "unprocessed", active, worst))
        assert worst <= 1e-4, f"{sid}: max relative error {worst:.2e}"
        assert active > 0, f"{sid}: a check on all-zero activations proves nothing"
    print("\nsae | TransformerLens hook | TL weights | active | max |err|/max(1,|ref|)")
    for row in table:
        print(f"{row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]:.2e}")


@asyncio_module
async def test_model_info_lists_hook_convention_and_source(hook_stub, hook_saes) -> None:  # type: ignore[no-untyped-def]
    info = await hook_stub.GetModelInfo(pb.GetModelInfoRequest())
    by_id = {s.id: s for s in info.saes}
    assert set(by_id) == set(CASES)  # embedded_sae = false: only these
    assert info.model.loaded_layers == TL_LAYERS  # cut after the deepest hook's block
    assert by_id["hf-mlp1"].tl_hook_name == "blocks.1.hook_mlp_out"
    assert by_id["hf-mlp1"].hf_hook_name == "model.layers.1.mlp.output"
    assert by_id["hf-post0"].tl_hook_name == "blocks.0.hook_resid_post"
    assert by_id["cww-post4"].convention == "transformer_lens(center_writing_weights)"
    assert by_id["fold-mlpin1"].tl_hook_name == "blocks.1.ln2.hook_normalized"  # fold_ln drops the gain
    assert by_id["tc3"].kind == "transcoder" and by_id["tc3"].hook_name_out == "blocks.3.hook_mlp_out"
    assert by_id["embed"].format == "saelens" and by_id["embed"].source == str(hook_saes["embed"])
    assert by_id["z2-head3"].transform == "head(3/9)" and by_id["z2-head3"].d_in == 64


def test_all_hooks_come_from_one_forward_pass(hook_runtime) -> None:  # type: ignore[no-untyped-def]
    from sagex.activation.encode import Threshold
    from sagex.activation.engine import WorkItem

    _, rt = hook_runtime
    engine = rt.engine
    calls = []
    handle = engine.lm.base.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        ids = tuple(engine.tokenize([TEXTS[0]])[0])
        rows = engine.run([WorkItem(ids, sid, Threshold(0.0)) for sid in CASES])
    finally:
        handle.remove()
    assert len(calls) == 1 and len(rows) == len(CASES)
    assert len(engine.lm.base.layers) == TL_LAYERS


def test_resolution_maps_both_spellings_to_one_point() -> None:
    from transformers import AutoModelForCausalLM

    from sagex.activation.hooks import HookError, HookTable

    model = AutoModelForCausalLM.from_pretrained(ensure_embedded_model(), dtype=torch.float32)
    table = HookTable(model)
    pairs = [
        ("blocks.3.hook_resid_post", "model.layers.3"), ("blocks.3.hook_resid_post", "layers.3.output"),
        ("blocks.3.hook_resid_pre", "model.layers.3.input"), ("blocks.3.hook_mlp_out", "model.layers.3.mlp"),
        ("blocks.3.hook_attn_out", "model.layers.3.self_attn"), ("hook_embed", "model.embed_tokens"),
        ("blocks.3.attn.hook_z", "model.layers.3.self_attn.o_proj.input"),
        ("blocks.3.mlp.hook_in", "model.layers.3.post_attention_layernorm.output"),
        ("blocks.3.hook_resid_mid", "model.layers.3.post_attention_layernorm.input"),
    ]
    for tl, hf in pairs:
        assert table.resolve(tl).key == table.resolve(hf).key, (tl, hf)
    assert len(table.tl_names()) == 1 + 30 * 9
    with pytest.raises(HookError) as info:
        table.resolve("blocks.30.hook_resid_post")
    assert "blocks.{0..29}" in str(info.value) and "hook_mlp_out" in str(info.value)
    with pytest.raises(HookError, match="model.layers"):
        table.resolve("model.layers.3.moe")
    with pytest.raises(HookError):
        table.resolve("model.norm")  # after the last layer: the cut model never computes it
