"""The hook table per architecture family, against TransformerLens: every TransformerLens
hook this server resolves, on tiny random GPT-2 (LayerNorm, learned positions, value
biases), Gemma-2 (post-norms, scaled embeddings, GQA) and GPT-NeoX (parallel residual)
models, captured the way the
server captures it, equals the TransformerLens cache of the same weights. (Llama, the
embedded model's family, is covered SAE by SAE in test_hooks.) Also: a Gemma Scope
embedding SAE, trained on the unscaled lookup, is fed the unscaled lookup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sagex.activation.assets.model import ensure_embedded_model
from sagex.activation.hooks import HookCapture, HookTable, StopForward

IDS = [5, 17, 300, 4000, 12, 99, 7, 1234, 42]
SAELENS_ONLY = {"ln2.hook_out"}  # TransformerBridge's alias of mlp.hook_in; HookedSAETransformer lacks it


def _family_model(name: str, root: Path) -> tuple[Path, object]:
    from tests.activation import tl_reference as ref

    if name == "gpt2":
        folder = ref.tiny_gpt2(root / "gpt2", ensure_embedded_model())
        return folder, ref.hooked_gpt2(folder)
    if name == "neox":
        folder = ref.tiny_neox(root / "neox", ensure_embedded_model())
        return folder, ref.hooked_neox(folder)
    folder = ref.tiny_gemma2(root / "gemma2", ensure_embedded_model())
    return folder, ref.hooked_gemma2(folder)


@pytest.mark.parametrize("family", ["gpt2", "gemma2", "neox"])
def test_every_transformer_lens_hook_matches(family: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    folder, tl = _family_model(family, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    table = HookTable(hf)
    names = [n for n in table.tl_names() if n.split(".", 2)[-1] not in SAELENS_ONLY]
    points = {n: table.resolve(n) for n in names}
    capture = HookCapture(table, points.values(), table.layer_path(table.num_layers - 1))
    with torch.inference_mode():
        try:
            hf.base_model(input_ids=torch.tensor([IDS]))
        except StopForward:
            pass
        got = capture.take()
        _, cache = tl.run_with_cache(torch.tensor([IDS]))  # type: ignore[attr-defined]
    kinds = set()
    for name, point in points.items():
        ref = cache[name][0]
        if name.endswith("hook_z"):
            ref = ref.flatten(-2)  # [pos, heads, d_head] -> the o_proj input, head-major
        err = (got[point.key][0].float() - ref).abs().max().item() / max(1.0, ref.abs().max().item())
        assert err < 1e-5, (family, name, err)
        kinds.add(point.kind)
    expected = {"embed", "resid_pre", "attn_z", "attn_out", "resid_mid", "ln2_normalized", "mlp_in", "mlp_out",
                "resid_post"}
    # a parallel block (GPT-NeoX) has no residual between attention and MLP
    assert kinds == (expected - {"resid_mid"} if family == "neox" else expected)


def test_gemma_scope_embedding_sae_reads_the_unscaled_lookup(tmp_path: Path) -> None:
    from sagex.activation.config import ActivationConfig
    from sagex.activation.encode import Threshold
    from sagex.activation.engine import ActivationEngine, WorkItem
    from tests.activation.test_formats import write_npz
    from tests.activation.tl_reference import tiny_gemma2

    folder = tiny_gemma2(tmp_path / "gemma2", ensure_embedded_model())
    # laid out as Google does, so the loader infers the embedding hook from the path
    npz_dir = tmp_path / "gemma-scope-2b-pt-res" / "embedding" / "width_4k" / "average_l0_6"
    arrays = write_npz(npz_dir, 64, 40, seed=3)
    arrays["W_enc"] *= 8.0  # the unscaled lookup is ~8x smaller than this helper assumes
    np.savez(npz_dir / "params.npz", **arrays)
    engine = ActivationEngine(ActivationConfig(model=folder, saes={"emb": npz_dir}, device="cpu",
                                               max_tokens_per_text=128, window_tokens=64))
    sae = engine.saes["emb"]
    assert sae.tl_hook_name == "hook_embed" and sae.transform == "scale(0.125)"  # 1 / sqrt(64)
    got = engine.run([WorkItem(tuple(IDS), "emb", Threshold(0.0))])[0].to_dense(40).numpy()
    from transformers import AutoModelForCausalLM

    lookup = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).model.embed_tokens.weight[IDS]
    pre = lookup.detach().double().numpy() @ arrays["W_enc"] + arrays["b_enc"]
    expected = np.where(pre > arrays["threshold"], pre, 0.0)
    assert (expected > 0).sum() > 0 and ((got > 0) == (expected > 0)).all()
    assert np.abs(got - expected).max() / max(1.0, np.abs(expected).max()) < 1e-5
