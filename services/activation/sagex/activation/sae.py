"""SAE encoders folded into encoder parameters, and the facts the server keeps per SAE.

Reading files is the job of ``sagex.activation.formats`` (one module per format);
this module reduces a loaded SAE to what the encoder needs.

Every supported architecture is reduced at load time to one matrix product and
a per-feature epilogue (``EncoderParams``), which both the torch path and the
fused Triton kernels evaluate:

    P      = x @ W_enc                              # [N, d_sae]
    pre    = P * scale + bias                       # scale: TopK decoder norms, else 1
    standard:  act = relu(pre)
    jumprelu:  act = pre * (pre > threshold)        # == relu(pre)*(pre > θ) for θ >= 0
    topk:      act = relu(pre) on the k largest pre of the row, else 0
    gated:     act = (P + bias > 0) * relu(P * mag_scale + mag_bias)

The folds are exact in real arithmetic: ``(x - b_dec) @ W + b = x @ W + (b - b_dec @ W)``,
TopK's decoder-norm rescale is a per-feature scale, and the gated SAE's
``x @ (W ⊙ exp(r_mag))`` is ``exp(r_mag) ⊙ (x @ W)``, so one GEMM serves both paths.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

Architecture = Literal["standard", "topk", "jumprelu", "gated"]
ARCHITECTURES: tuple[Architecture, ...] = ("standard", "topk", "jumprelu", "gated")
# Transcoders encode like the SAE of the same activation; their decoder writes elsewhere
# (``hook_name_out``), which serving latents never needs.
TRANSCODER_ENCODERS: dict[str, Architecture] = {
    "transcoder": "standard",
    "skip_transcoder": "standard",
    "jumprelu_transcoder": "jumprelu",
    "jumprelu_skip_transcoder": "jumprelu",
}


class SaeLoadError(ValueError):
    """The SAE folder cannot be served; the message says what is wrong."""


@dataclass(frozen=True)
class EncoderParams:
    """An SAE encoder reduced to one GEMM plus a per-feature epilogue.

    All vectors are float32 and have shape ``[d_sae]``; ``w_enc`` is ``[d_in, d_sae]``
    in the dtype the encoder runs in.
    """

    architecture: Architecture
    w_enc: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor | None = None  # topk decoder-norm rescale
    threshold: torch.Tensor | None = None  # jumprelu
    mag_scale: torch.Tensor | None = None  # gated: exp(r_mag)
    mag_bias: torch.Tensor | None = None  # gated: b_mag - exp(r_mag) * (b_dec @ W_enc)
    k: int = 0  # topk

    @property
    def d_in(self) -> int:
        return int(self.w_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.w_enc.shape[1])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> EncoderParams:
        def move(t: torch.Tensor | None, weight: bool = False) -> torch.Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if (weight and dtype is not None) else t.dtype).contiguous()

        return EncoderParams(
            architecture=self.architecture,
            w_enc=move(self.w_enc, weight=True),  # type: ignore[arg-type]
            bias=move(self.bias),  # type: ignore[arg-type]
            scale=move(self.scale),
            threshold=move(self.threshold),
            mag_scale=move(self.mag_scale),
            mag_bias=move(self.mag_bias),
            k=self.k,
        )


@dataclass(frozen=True)
class LoadedSae:
    """An SAE the server may serve, with the facts clients see.

    ``hook_name`` is the name the SAE's files give; ``hook_key`` the captured tensor
    it reads (``hooks.HookPoint.key``); ``transform`` what is applied to that tensor
    first to reproduce the SAE's training basis (``conventions``)."""

    id: str
    hook_name: str
    hook_layer: int
    params: EncoderParams
    content_hash: str
    dtype: str
    hook_key: str = ""
    tl_hook_name: str = ""  # TransformerLens name of the resolved point ("" for custom module paths)
    hf_hook_name: str = ""  # HF module path + ".input"/".output"
    transform: str = "none"  # "none" | "center"
    convention: str = "hf"
    format: str = "saelens"
    source: str = ""
    kind: str = "sae"  # "sae" | "transcoder"
    hook_name_out: str = ""  # a transcoder's target

    @property
    def architecture(self) -> Architecture:
        return self.params.architecture


def content_hash(paths: list[Path], extra: str = "") -> str:
    """Hash of the SAE's files (and anything else that changes its activations)."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def fold(sae: torch.nn.Module) -> EncoderParams:
    """Fold a loaded sae-lens SAE into ``EncoderParams`` (float32 vectors)."""
    cfg = sae.cfg
    arch = TRANSCODER_ENCODERS.get(cfg.architecture(), cfg.architecture())
    if arch not in ARCHITECTURES:
        raise SaeLoadError(f"architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
    if getattr(cfg, "normalize_activations", "none") not in ("none", None):
        raise SaeLoadError(
            f"normalize_activations={cfg.normalize_activations!r} is not supported; "
            "fold the normalisation into the weights and save with 'none'"
        )
    if getattr(cfg, "reshape_activations", "none") not in ("none", "hook_z"):
        raise SaeLoadError(f"reshape_activations={cfg.reshape_activations!r} is not supported")
    # reshape_activations="hook_z" flattens [.., n_heads, d_head] to n_heads*d_head before encoding;
    # the HF hook (the o_proj input) is already that flat tensor, so nothing is left to do.
    with torch.no_grad():
        w = sae.W_enc.detach().float()
        b_dec = sae.b_dec.detach().float() if cfg.apply_b_dec_to_input else torch.zeros(w.shape[0])
        shift = b_dec @ w  # the b_dec subtraction, moved past the GEMM
        if arch == "gated":
            mag_scale = sae.r_mag.detach().float().exp()
            return EncoderParams(
                architecture="gated",
                w_enc=w,
                bias=sae.b_gate.detach().float() - shift,
                mag_scale=mag_scale,
                mag_bias=sae.b_mag.detach().float() - mag_scale * shift,
            )
        bias = sae.b_enc.detach().float() - shift
        if arch == "topk":
            scale = None
            if getattr(cfg, "rescale_acts_by_decoder_norm", False):
                scale = sae.W_dec.detach().float().norm(dim=-1)
                bias = bias * scale
            return EncoderParams("topk", w, bias, scale=scale, k=int(cfg.k))
        if arch == "jumprelu":
            threshold = sae.threshold.detach().float()
            if bool((threshold < 0).any()):
                raise SaeLoadError("JumpReLU thresholds must be >= 0")
            return EncoderParams("jumprelu", w, bias, threshold=threshold)
        return EncoderParams("standard", w, bias)
