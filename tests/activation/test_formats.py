"""SAE formats: each loads through the registry and serves what its own reference encode gives.

References are computed here, independently of the server: sae-lens for SAELens files,
sparsify's encode rule written out for sparsify checkpoints, the Gemma Scope JumpReLU
rule for ``params.npz``, all on activations read from an unmodified transformers model.
Release ids are resolved from a Hugging Face cache laid out by the test (offline).
Load-time refusals are checked on a real engine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sagex.activation.assets.model import ensure_embedded_model
from sagex.activation.encode import Threshold
from sagex.activation.engine import ActivationEngine, WorkItem
from sagex.activation.sae import SaeLoadError
from tests.builders import save_random_sae
from tests.conftest import D_MODEL, TEXTS

GEMMA_RES = ("gemma-scope-2b-pt-res", "google/gemma-scope-2b-pt-res", "layer_2/width_16k/average_l0_141")
GEMMA_TC = ("gemma-scope-2b-pt-transcoders", "google/gemma-scope-2b-pt-transcoders", "layer_2/width_16k/average_l0_49")
JB = ("gpt2-small-res-jb", "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.2.hook_resid_pre")


def lay_out_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    """The huggingface_hub cache layout: refs/main names a snapshot holding the files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for rel, src in files.items():
        dst = repo / "snapshots" / commit / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def write_npz(path: Path, d_in: int, d_sae: int, seed: int) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    arrays = {
        "W_enc": (g.standard_normal((d_in, d_sae)) / (d_in**0.5 * 8)).astype(np.float32),
        "W_dec": g.standard_normal((d_sae, d_in)).astype(np.float32),
        "b_enc": (g.standard_normal(d_sae) * 0.3).astype(np.float32),
        "b_dec": g.standard_normal(d_in).astype(np.float32),
        "threshold": (g.random(d_sae) * 0.3).astype(np.float32),
    }
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "params.npz", **arrays)
    return arrays


def write_sparsify(folder: Path, d_in: int, latents: int, k: int, seed: int,
                   transcode: bool = False) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    state = {
        "encoder.weight": torch.randn(latents, d_in, generator=g) / (d_in**0.5 * 8),
        "encoder.bias": torch.randn(latents, generator=g) * 0.3,
        "W_dec": torch.randn(latents, d_in, generator=g),
        "b_dec": torch.randn(d_in, generator=g) * 2.0,  # large, so a missing subtraction shows
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, folder / "sae.safetensors")
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": latents, "k": k,
           "multi_topk": False, "skip_connection": False, "transcode": transcode, "d_in": d_in}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    (folder.parent / "config.json").write_text(json.dumps({"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    return state


@pytest.fixture(scope="module")
def format_setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("formats")
    cache = root / "hf-cache"
    jb = save_random_sae(root / "jb", "standard", D_MODEL, 96, JB[2], seed=7)
    lay_out_cache(cache, JB[1], {f"{JB[2]}/cfg.json": jb / "cfg.json",
                                 f"{JB[2]}/sae_weights.safetensors": jb / "sae_weights.safetensors"})
    gres = write_npz(root / "gres", D_MODEL, 80, seed=8)
    lay_out_cache(cache, GEMMA_RES[1], {f"{GEMMA_RES[2]}/params.npz": root / "gres" / "params.npz"})
    gtc = write_npz(root / "gtc", D_MODEL, 80, seed=9)
    lay_out_cache(cache, GEMMA_TC[1], {f"{GEMMA_TC[2]}/params.npz": root / "gtc" / "params.npz"})
    graw = write_npz(root / "raw-npz", D_MODEL, 80, seed=10)
    sp = write_sparsify(root / "sparsify-run" / "layers.2", D_MODEL, 128, 16, seed=11)
    spt = write_sparsify(root / "sparsify-tc" / "layers.1.mlp", D_MODEL, 128, 16, seed=12, transcode=True)
    saes = {
        "jb": f"{JB[0]}/{JB[2]}",
        "gres": f"{GEMMA_RES[0]}/{GEMMA_RES[2]}",
        "gtc": f"{GEMMA_TC[0]}/{GEMMA_TC[2]}",
        "graw": _source(root / "raw-npz", "model.layers.4"),
        "sp": root / "sparsify-run" / "layers.2",
        "spt": root / "sparsify-tc" / "layers.1.mlp",
    }
    return {"root": root, "cache": cache, "saes": saes, "jb": jb, "gres": gres, "gtc": gtc, "graw": graw,
            "sp": sp, "spt": spt}


def _source(path: Path, hook: str):  # type: ignore[no-untyped-def]
    from sagex.activation.formats import SaeSource

    return SaeSource(str(path), hook)


@pytest.fixture(scope="module")
def format_engine(format_setup):  # type: ignore[no-untyped-def]
    from sagex.activation.config import ActivationConfig

    return ActivationEngine(ActivationConfig(saes=format_setup["saes"], hf_cache_dir=format_setup["cache"],
                                             device="cpu"))


@pytest.fixture(scope="module")
def hf_points():  # type: ignore[no-untyped-def]
    """Per text: token ids, hidden_states, and per layer the MLP input (post_attention_layernorm
    output) and the gain-free norm of resid_mid (TransformerLens's ln2.hook_normalized)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_embedded_model()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False).input_ids
        mlp_in: dict[int, torch.Tensor] = {}
        normed: dict[int, torch.Tensor] = {}
        handles = []
        for i, layer in enumerate(model.model.layers[:5]):
            ln = layer.post_attention_layernorm
            handles.append(ln.register_forward_hook(lambda _m, _a, o, i=i, d=mlp_in: d.__setitem__(i, o[0])))
            handles.append(ln.register_forward_pre_hook(lambda m, a, i=i, d=normed: d.__setitem__(
                i, a[0][0] / (a[0][0].pow(2).mean(-1, keepdim=True) + m.variance_epsilon).sqrt())))
        with torch.inference_mode():
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        for h in handles:
            h.remove()
        out.append((ids, [h[0] for h in hs], mlp_in, normed))
    return out


def _served(engine: ActivationEngine, sae_id: str, ids: list[int]) -> np.ndarray:
    rows = engine.run([WorkItem(tuple(ids), sae_id, Threshold(0.0))])[0]
    return rows.to_dense(engine.saes[sae_id].params.d_sae).numpy()


def _jumprelu(x: torch.Tensor, a: dict[str, np.ndarray]) -> np.ndarray:
    pre = x.numpy().astype(np.float64) @ a["W_enc"] + a["b_enc"]
    return np.where(pre > a["threshold"], pre, 0.0)


def _sparsify(x: torch.Tensor, s: dict[str, torch.Tensor], k: int, transcode: bool) -> np.ndarray:
    """sparsify's SparseCoder.encode, written out: (x - b_dec) for SAEs, ReLU, top-k."""
    x = x.double()
    if not transcode:
        x = x - s["b_dec"].double()
    pre = torch.relu(x @ s["encoder.weight"].double().T + s["encoder.bias"].double())
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, idx, vals).numpy()


def _check(name: str, got: np.ndarray, expected: np.ndarray) -> float:
    assert ((got > 0) == (expected > 0)).all(), f"{name}: active sets differ"
    assert (expected > 0).sum() > 0, f"{name}: all-zero reference proves nothing"
    err = float(np.abs(got - expected).max()) / max(1.0, float(np.abs(expected).max()))
    assert err <= 1e-4, f"{name}: max relative error {err:.2e}"
    return err


def test_every_format_serves_its_reference_encode(format_engine, format_setup, hf_points) -> None:  # type: ignore[no-untyped-def]
    from sae_lens import SAE

    jb_ref = SAE.load_from_disk(str(format_setup["jb"]), device="cpu", dtype="float32")
    errors: dict[str, float] = {}
    for ids, hs, mlp_in, normed in hf_points:
        with torch.inference_mode():
            cases = {
                "jb": jb_ref.encode(hs[2]).numpy(),  # blocks.2.hook_resid_pre = hidden_states[2]
                "gres": _jumprelu(hs[3], format_setup["gres"]),  # layer_2 res = blocks.2.hook_resid_post
                "gtc": _jumprelu(normed[2], format_setup["gtc"]),  # blocks.2.ln2.hook_normalized
                "graw": _jumprelu(hs[5], format_setup["graw"]),  # explicit hook model.layers.4
                "sp": _sparsify(hs[3], format_setup["sp"], 16, transcode=False),  # layers.2 output
                "spt": _sparsify(mlp_in[1], format_setup["spt"], 16, transcode=True),  # layers.1.mlp input
            }
        for name, expected in cases.items():
            errors[name] = max(errors.get(name, 0.0), _check(name, _served(format_engine, name, ids), expected))
    print("\nformat max relative errors:", {k: f"{v:.1e}" for k, v in errors.items()})


def test_sources_are_described(format_engine) -> None:  # type: ignore[no-untyped-def]
    s = format_engine.saes
    assert s["jb"].format == "saelens-release" and s["jb"].source == f"{JB[0]}/{JB[2]}"
    # the release's config_overrides say center_writing_weights; on an RMS model that changes nothing
    assert s["jb"].convention == "transformer_lens(center_writing_weights)" and s["jb"].transform == "none"
    assert s["gres"].tl_hook_name == "blocks.2.hook_resid_post" and s["gres"].architecture == "jumprelu"
    assert s["gtc"].kind == "transcoder" and s["gtc"].tl_hook_name == "blocks.2.ln2.hook_normalized"
    assert s["gtc"].hook_name_out == "blocks.2.hook_mlp_out"
    assert s["sp"].format == "sparsify" and s["sp"].tl_hook_name == "blocks.2.hook_resid_post"
    assert s["spt"].kind == "transcoder" and s["spt"].hf_hook_name == "model.layers.1.mlp.input"
    assert s["graw"].hook_name == "model.layers.4" and s["graw"].tl_hook_name == "blocks.4.hook_resid_post"
    assert "smollm2-135m-l3-topk32" in s  # --sae adds to the embedded SAE


def _engine(saes, **kw):  # type: ignore[no-untyped-def]
    from sagex.activation.config import ActivationConfig

    return ActivationEngine(ActivationConfig(saes=saes, embedded_sae=False, device="cpu", **kw))


def test_a_hook_the_model_lacks_is_refused_with_the_names_it_has(tmp_path: Path) -> None:
    folder = save_random_sae(tmp_path / "s", "standard", D_MODEL, 16, "blocks.31.hook_resid_post", seed=1)
    with pytest.raises(SaeLoadError) as info:
        _engine({"deep": folder})
    msg = str(info.value)
    assert "'deep'" in msg and "blocks.31.hook_resid_post" in msg and "blocks.{0..29}" in msg
    assert "hook_mlp_out" in msg and "model.layers.{0..29}" in msg


def test_a_release_not_in_the_cache_names_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(SaeLoadError) as info:
        _engine({"jb": f"{JB[0]}/blocks.5.hook_resid_pre"}, hf_cache_dir=tmp_path / "empty-cache")
    msg = str(info.value)
    assert JB[1] in msg and "blocks.5.hook_resid_pre/cfg.json" in msg and "hf download" in msg
    with pytest.raises(SaeLoadError, match="has no SAE 'blocks.99.x'; some it has"):
        _engine({"jb": f"{JB[0]}/blocks.99.x"}, hf_cache_dir=tmp_path)
    with pytest.raises(SaeLoadError, match="not a SAELens release"):
        _engine({"x": "no-such-release/abc"}, hf_cache_dir=tmp_path)


def test_an_sae_whose_d_in_does_not_fit_its_hook_is_refused(tmp_path: Path) -> None:
    folder = save_random_sae(tmp_path / "s", "standard", 768, 16, "blocks.2.hook_mlp_out", seed=1)
    with pytest.raises(SaeLoadError, match=r"d_in=768.*has width 576"):
        _engine({"gpt2ish": folder})


def test_a_processed_basis_the_server_cannot_reproduce_is_refused(tmp_path: Path) -> None:
    z = save_random_sae(tmp_path / "z", "standard", D_MODEL, 16, "blocks.2.attn.hook_z", seed=1,
                        model_from_pretrained_kwargs={"refactor_factored_attn_matrices": True})
    with pytest.raises(SaeLoadError, match="refactor_factored_attn_matrices.*cannot reproduce"):
        _engine({"z": z})
    odd = save_random_sae(tmp_path / "o", "standard", D_MODEL, 16, "blocks.2.hook_resid_post", seed=1,
                          model_from_pretrained_kwargs={"fold_ln": True, "use_attn_result": True})
    with pytest.raises(SaeLoadError, match=r"\['use_attn_result'\].*does not reproduce"):
        _engine({"odd": odd})
    mamba = save_random_sae(tmp_path / "m", "standard", D_MODEL, 16, "blocks.2.hook_resid_post", seed=1,
                            model_class_name="HookedMamba")
    with pytest.raises(SaeLoadError, match="HookedMamba"):
        _engine({"m": mamba})
    custom = save_random_sae(tmp_path / "c", "standard", D_MODEL, 16, "model.layers.2.self_attn.o_proj", seed=1,
                             model_from_pretrained_kwargs={"center_writing_weights": True})
    with pytest.raises(SaeLoadError, match="HF module point"):
        _engine({"c": custom})
    head = save_random_sae(tmp_path / "h", "standard", 64, 16, "blocks.2.hook_resid_post", seed=1, hook_head_index=2)
    with pytest.raises(SaeLoadError, match="hook_head_index=2 is supported on attn.hook_z only"):
        _engine({"h": head})


def test_a_bare_npz_without_a_hook_asks_for_one(tmp_path: Path) -> None:
    write_npz(tmp_path / "x", D_MODEL, 16, seed=1)
    with pytest.raises(SaeLoadError, match="name no hook; give one"):
        _engine({"x": tmp_path / "x"})
