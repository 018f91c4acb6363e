"""TransformerLens conventions on a LayerNorm model, proven against TransformerLens.

The embedded SmolLM2 uses RMS norms, where TransformerLens's centring is a no-op
(test_hooks covers it processed and unprocessed). Centring matters on LayerNorm
models, so this builds a tiny random GPT-2 (noised gains and biases), serves SAEs
whose cfg records TransformerLens processing, and compares each with sae-lens on a
HookedTransformer built with exactly those flags.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sagex.activation.assets.model import ensure_embedded_model
from sagex.activation.encode import Threshold
from sagex.activation.engine import ActivationEngine, WorkItem
from sagex.activation.sae import SaeLoadError
from tests.builders import save_random_sae
from tests.conftest import TEXTS

CWW = {"center_writing_weights": True}
# id -> (arch, hook, processing flags in the SAE's cfg, TransformerLens hook to compare, expected transform)
CASES = {
    "embed-cww": ("standard", "hook_embed", CWW, "hook_embed", "center"),
    "pre1-cww": ("topk", "blocks.1.hook_resid_pre", CWW, "blocks.1.hook_resid_pre", "center"),
    "mlp0-cww": ("standard", "blocks.0.hook_mlp_out", CWW, "blocks.0.hook_mlp_out", "center"),
    "attn1-cww": ("jumprelu", "blocks.1.hook_attn_out", CWW, "blocks.1.hook_attn_out", "center"),
    "post1-cww": ("standard", "blocks.1.hook_resid_post", {**CWW, "fold_ln": True}, "blocks.1.hook_resid_post",
                  "center"),
    "mid0": ("standard", "blocks.0.hook_resid_mid", {}, "blocks.0.hook_resid_mid", "none"),
    "post1": ("standard", "blocks.1.hook_resid_post", {}, "blocks.1.hook_resid_post", "none"),
    "norm1": ("standard", "blocks.1.ln2.hook_normalized", {}, "blocks.1.ln2.hook_normalized", "none"),
    "mlpin0": ("standard", "blocks.0.mlp.hook_in", {}, "blocks.0.mlp.hook_in", "none"),
    "mlpin0-fold": ("standard", "blocks.0.mlp.hook_in", {"fold_ln": True}, "blocks.0.mlp.hook_in", "none"),
    "z1": ("standard", "blocks.1.attn.hook_z", {}, "blocks.1.attn.hook_z", "none"),
}


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.activation.tl_reference import tiny_gpt2

    return tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2") / "gpt2", ensure_embedded_model())


@pytest.fixture(scope="module")
def gpt2_saes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpt2-saes")
    out = {}
    for i, (sid, (arch, hook, flags, _, _)) in enumerate(CASES.items()):
        meta: dict = {"model_from_pretrained_kwargs": dict(flags)}
        if hook.endswith("hook_z"):
            meta["reshape_activations"] = "hook_z"
        out[sid] = save_random_sae(root / sid, arch, 64, 48, hook, seed=200 + i, **meta)
    return out


def _engine(model: Path, saes: dict[str, Path]) -> ActivationEngine:
    from sagex.activation.config import ActivationConfig

    return ActivationEngine(ActivationConfig(model=model, saes=saes, device="cpu", max_tokens_per_text=128,
                                             batch_token_budget=4096, window_tokens=64))


def test_processed_saes_on_a_layernorm_model_match_transformer_lens(gpt2_dir, gpt2_saes) -> None:  # type: ignore[no-untyped-def]
    from sae_lens import SAE
    from transformers import AutoTokenizer

    from tests.activation.tl_reference import hooked_gpt2

    engine = _engine(gpt2_dir, gpt2_saes)
    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    models: dict[tuple, object] = {}
    table = []
    for sid, (_, _, flags, tl_hook, transform) in CASES.items():
        assert engine.saes[sid].transform == transform, sid
        key = tuple(sorted(flags.items()))
        if key not in models:
            models[key] = hooked_gpt2(gpt2_dir, **flags)
        tl = models[key]
        sae = SAE.load_from_disk(str(gpt2_saes[sid]), device="cpu", dtype="float32")
        worst, active = 0.0, 0
        for text in TEXTS:
            ids = tok(text, add_special_tokens=False).input_ids
            assert list(engine.tokenize([text])[0]) == ids
            with torch.inference_mode():
                _, cache = tl.run_with_cache(torch.tensor([ids]), names_filter=[tl_hook])  # type: ignore[attr-defined]
                expected = sae.encode(cache[tl_hook][0]).numpy()
            got = engine.run([WorkItem(tuple(ids), sid, Threshold(0.0))])[0].to_dense(48).numpy()
            assert ((got > 0) == (expected > 0)).all(), f"{sid}: active sets differ"
            scale = max(1.0, float(np.abs(expected).max()))
            worst = max(worst, float(np.abs(got - expected).max()) / scale)
            active += int((expected > 0).sum())
        assert active > 0 and worst <= 1e-4, (sid, active, worst)
        table.append((sid, tl_hook, flags, transform, active, worst))
    print("\nsae | TL hook | TL flags | transform | active | max rel err")
    for row in table:
        print(f"{row[0]} | {row[1]} | {sorted(row[2])} | {row[3]} | {row[4]} | {row[5]:.1e}")


def test_centring_is_needed_on_layernorm_models(gpt2_dir) -> None:  # type: ignore[no-untyped-def]
    """The processed basis really differs from HF's (so the transform is not a no-op)."""
    from tests.activation.tl_reference import hooked_gpt2

    ids = torch.tensor([[5, 17, 300, 4000, 12]])
    with torch.inference_mode():
        _, raw = hooked_gpt2(gpt2_dir).run_with_cache(ids)
        _, centred = hooked_gpt2(gpt2_dir, **CWW).run_with_cache(ids)
    for hook in ("blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out"):
        diff = (raw[hook] - centred[hook]).abs().max().item()
        assert diff > 0.1, hook
        recentred = raw[hook] - raw[hook].mean(-1, keepdim=True)
        assert (recentred - centred[hook]).abs().max().item() < 1e-4


def test_value_bias_folding_is_refused_where_the_model_has_one(gpt2_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    z = save_random_sae(tmp_path / "z", "standard", 64, 16, "blocks.1.attn.hook_z", seed=1,
                        model_from_pretrained_kwargs={"fold_value_biases": True}, reshape_activations="hook_z")
    with pytest.raises(SaeLoadError, match="fold_value_biases.*has one"):
        _engine(gpt2_dir, {"z": z})
