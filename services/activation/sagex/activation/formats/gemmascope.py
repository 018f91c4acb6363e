"""Gemma Scope ``params.npz``: JumpReLU SAEs and transcoders as raw numpy arrays.

Keys ``W_enc (d_in, d_sae)``, ``W_dec``, ``b_enc``, ``b_dec``, ``threshold`` (lower-case
``w_`` spellings too). Encode: ``pre = x @ W_enc + b_enc``; ``acts = pre * (pre > threshold)``;
``b_dec`` is *not* subtracted from the input. The file names no hook: it comes from the
path as Google lays it out (``google/gemma-scope-2b-pt-{res,mlp,att,transcoders}`` /
``layer_L/width_16k/average_l0_N`` or ``embedding/...``), or from the configuration.

Embedding SAEs were trained on the *unscaled* token lookup, while Gemma's HF
``embed_tokens`` output is already multiplied by sqrt(d_model): the loader records
that, and ``conventions`` divides by the model's own scale at serve time.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from sagex.activation.formats import FolderFormat, SaeFile
from sagex.activation.sae import EncoderParams, SaeLoadError, content_hash

_SITES = {"res": "hook_resid_post", "mlp": "hook_mlp_out", "att": "attn.hook_z", "transcoders": "ln2.hook_normalized"}


def detect(path: Path) -> bool:
    return (path / "params.npz").is_file()


def hook_from_path(where: str) -> tuple[str, str, str]:
    """(hook, kind, hook_out) from a repo id and folder; ("", "sae", "") when they say nothing."""
    site = re.search(r"gemma-scope-[^/]*?-(res|mlp|att|transcoders)(?:[-/]|$)", where)
    if "embedding/" in where or where.rstrip("/").endswith("embedding"):
        return "hook_embed", "sae", ""
    layer = re.search(r"layer_(\d+)", where)
    if site is None or layer is None:
        return "", "sae", ""
    kind = site.group(1)
    hook = f"blocks.{layer.group(1)}.{_SITES[kind]}"
    if kind == "transcoders":
        return hook, "transcoder", f"blocks.{layer.group(1)}.hook_mlp_out"
    return hook, "sae", ""


def load(path: Path, where: str = "", source: str = "") -> SaeFile:
    try:
        with np.load(path / "params.npz") as npz:
            arrays = {k.replace("w_", "W_", 1) if k.startswith("w_") else k: np.asarray(npz[k]) for k in npz.files}
    except Exception as exc:  # not a zip, truncated
        raise SaeLoadError(f"{path}/params.npz cannot be read: {exc}") from exc
    missing = [k for k in ("W_enc", "b_enc", "threshold") if k not in arrays]
    if missing:
        raise SaeLoadError(f"{path}/params.npz lacks {missing}; has {sorted(arrays)}")
    w = torch.from_numpy(arrays["W_enc"]).float()
    b_enc = torch.from_numpy(arrays["b_enc"]).float()
    threshold = torch.from_numpy(arrays["threshold"]).float()
    if w.ndim != 2 or b_enc.shape != (w.shape[1],) or threshold.shape != (w.shape[1],):
        raise SaeLoadError(f"{path}/params.npz: W_enc {tuple(w.shape)}, b_enc {tuple(b_enc.shape)} and threshold "
                           f"{tuple(threshold.shape)} do not fit together")
    if bool((threshold < 0).any()):
        raise SaeLoadError(f"{path}/params.npz: JumpReLU thresholds must be >= 0")
    hook, kind, hook_out = hook_from_path(where or str(path.resolve()))
    meta = {"model_class_name": "HookedTransformer", "model_from_pretrained_kwargs": {}, "prepend_bos": True}
    if hook == "hook_embed":
        meta["trained_on_unscaled_embedding"] = True
    return SaeFile(
        params=EncoderParams("jumprelu", w.contiguous(), b_enc, threshold=threshold),
        hook_name=hook,
        format="gemmascope",
        source=source or str(path),
        content_hash=content_hash([path / "params.npz"]),
        kind=kind,
        hook_name_out=hook_out,
        meta=meta,
    )


FORMAT = FolderFormat("gemmascope", detect, lambda path: load(path))
