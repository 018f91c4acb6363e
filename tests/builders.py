"""Shared test builders: random SAEs of every architecture, saved in SAELens format."""

from __future__ import annotations

from pathlib import Path

import torch

ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")


def random_sae(arch: str, d_in: int, d_sae: int, hook_name: str, seed: int, k: int = 8, **metadata):  # type: ignore[no-untyped-def]
    """A sae-lens SAE with random weights whose activations are neither all zero nor all on.
    ``metadata`` adds SAELens metadata fields (``model_from_pretrained_kwargs``, ``hook_name_out``...);
    ``arch`` may also be ``transcoder`` or ``jumprelu_transcoder`` (d_out = d_in)."""
    from sae_lens import (
        GatedSAE,
        GatedSAEConfig,
        JumpReLUSAE,
        JumpReLUSAEConfig,
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
        Transcoder,
        TranscoderConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(hook_name=hook_name, **metadata)
    common = {"d_in": d_in, "d_sae": d_sae, "metadata": meta}
    tc = {**common, "d_out": d_in, "apply_b_dec_to_input": False}
    sae = {
        "standard": lambda: StandardSAE(StandardSAEConfig(**common)),
        "topk": lambda: TopKSAE(TopKSAEConfig(k=k, rescale_acts_by_decoder_norm=True, **common)),
        "jumprelu": lambda: JumpReLUSAE(JumpReLUSAEConfig(**common)),
        "gated": lambda: GatedSAE(GatedSAEConfig(**common)),
        "transcoder": lambda: Transcoder(TranscoderConfig(**tc)),
        "jumprelu_transcoder": lambda: JumpReLUTranscoder(JumpReLUTranscoderConfig(**tc)),
    }[arch]()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name == "threshold":
                param.copy_(torch.rand(param.shape, generator=g) * 0.5)
            elif name == "W_dec":
                param.copy_(torch.randn(param.shape, generator=g) * (0.5 + torch.rand(param.shape[0], 1, generator=g)))
            elif name == "W_enc":
                # Residual norms of the embedded model are O(10-100): keep pre-activations O(1).
                param.copy_(torch.randn(param.shape, generator=g) / (d_in**0.5 * 8))
            else:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    return sae


def save_random_sae(folder: Path, arch: str, d_in: int, d_sae: int, hook_name: str, seed: int, **metadata) -> Path:  # type: ignore[no-untyped-def]
    folder.mkdir(parents=True, exist_ok=True)
    reshape = metadata.pop("reshape_activations", None)
    sae = random_sae(arch, d_in, d_sae, hook_name, seed, **metadata)
    if reshape:
        sae.cfg.reshape_activations = reshape
    sae.save_model(folder)
    return folder
