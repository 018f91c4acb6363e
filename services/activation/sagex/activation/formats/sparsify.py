"""EleutherAI sparsify checkpoints: one hookpoint folder with ``cfg.json`` + ``sae.safetensors``.

Written here rather than through sae-lens's ``sparsify_disk_loader``, which (sae-lens
6.54) transposes ``W_dec`` so the state dict no longer loads, and sets
``apply_b_dec_to_input = not normalize_decoder`` although sparsify subtracts ``b_dec``
from every SAE input (only transcoders skip it); it also ignores ``transcode`` and
``groupmax`` and maps every ``layers.N`` folder to ``blocks.N.hook_resid_post``
(docs/formats.md 4.4). This loader follows sparsify's own encode:

    SAE:         acts = topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias))
    transcoder:  acts = topk(relu(x @ encoder.weight.T + encoder.bias)), x = the module's *input*

The folder name is the hookpoint, a module path relative to the base model
(``layers.10``, ``embed_tokens``, ``h.0.mlp``); an SAE reads the module's output, a
transcoder its input.
"""

from __future__ import annotations

import json
from pathlib import Path

from sagex.activation.formats import FolderFormat, SaeFile
from sagex.activation.sae import EncoderParams, SaeLoadError, content_hash


def detect(path: Path) -> bool:
    return (path / "cfg.json").is_file() and (path / "sae.safetensors").is_file()


def load(path: Path) -> SaeFile:
    from safetensors.torch import load_file

    cfg = json.loads((path / "cfg.json").read_text())
    if cfg.get("activation", "topk") != "topk":
        raise SaeLoadError(f"{path}: sparsify activation {cfg.get('activation')!r} is not supported (only topk)")
    try:
        state = {k: v.float() for k, v in load_file(path / "sae.safetensors").items()}
        w, b_enc, b_dec = state["encoder.weight"], state["encoder.bias"], state["b_dec"]
    except KeyError as exc:
        raise SaeLoadError(f"{path}/sae.safetensors lacks {exc}; "
                           "expected encoder.weight, encoder.bias, W_dec, b_dec") from exc
    except Exception as exc:  # a truncated or foreign file
        raise SaeLoadError(f"{path}/sae.safetensors cannot be read: {exc}") from exc
    d_in = int(cfg.get("d_in", w.shape[1]))
    if w.shape[1] != d_in or b_enc.shape[0] != w.shape[0]:
        raise SaeLoadError(f"{path}: encoder.weight {tuple(w.shape)} does not fit d_in={d_in}")
    transcode = bool(cfg.get("transcode", False))
    k = int(cfg.get("k", 32))
    w_enc = w.T.contiguous()  # [d_in, num_latents]
    bias = b_enc if transcode else b_enc - b_dec @ w_enc  # (x - b_dec) W = x W - b_dec W
    # A folder per seed ("layers.3/seed1") names its hookpoint one level up.
    hookpoint = path.parent.name if path.name.startswith("seed") and path.name[4:].isdigit() else path.name
    parent_cfg = path.parent / "config.json"
    model_name = ""
    if parent_cfg.is_file():
        try:
            model_name = str(json.loads(parent_cfg.read_text()).get("model", ""))
        except (ValueError, AttributeError):
            pass
    return SaeFile(
        params=EncoderParams("topk", w_enc, bias.contiguous(), k=min(k, w_enc.shape[1])),
        hook_name=f"{hookpoint}.input" if transcode else hookpoint,
        format="sparsify",
        source=str(path),
        content_hash=content_hash([path / "cfg.json", path / "sae.safetensors"]),
        kind="transcoder" if transcode else "sae",
        hook_name_out=hookpoint if transcode else "",
        meta={"model_name": model_name, "model_class_name": "AutoModelForCausalLM", "sparsify": cfg},
    )


FORMAT = FolderFormat("sparsify", detect, load)


