"""Output side of a feature: its decoder direction, and the logit lens.

The logit lens of feature f is ``W_U · N(d_f)``: the decoder row written into the
last residual stream, through the model's final norm (its element-wise weight
changes ranks, so it is applied) and the unembedding (without its bias, which
does not depend on the feature), then the final-logit softcap where the model has
one. It is the direct, zero-layers-downstream effect of the feature on the next
token, computed in float32 whatever the serving dtype.

The truncated LM drops the final norm and LM head, so ``OutputHead`` keeps its own
copy of both (a few MB; the unembedding is usually tied to the embedding).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sagex.activation.formats import SaeSource

FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f")


class OutputHeadError(ValueError):
    """The model's final norm or unembedding cannot be found; the message says which."""


def final_norm_of(model: nn.Module) -> nn.Module:
    base = model.base_model
    for name in FINAL_NORM_NAMES:
        module = getattr(base, name, None)
        if isinstance(module, nn.Module):
            return module
    raise OutputHeadError(
        f"{type(model).__name__}: no final norm among {FINAL_NORM_NAMES} on its base model; "
        "the logit lens needs it"
    )


@dataclass
class OutputHead:
    """Final norm + unembedding (+ softcap), float32, on one device."""

    norm: nn.Module
    unembed: torch.Tensor  # [vocab, d_model] float32
    softcap: float | None

    @classmethod
    def from_model(cls, model: nn.Module, device: torch.device) -> OutputHead:
        head = model.get_output_embeddings()
        if head is None or not hasattr(head, "weight"):
            raise OutputHeadError(f"{type(model).__name__} has no output embedding (LM head)")
        import copy

        norm = copy.deepcopy(final_norm_of(model)).to(device=device, dtype=torch.float32).eval()
        softcap = getattr(model.config, "final_logit_softcapping", None)
        unembed = head.weight.detach().to(device=device, dtype=torch.float32).clone()
        return cls(norm, unembed, float(softcap) if softcap else None)

    @classmethod
    def load(cls, model_dir: Path, device: torch.device) -> OutputHead:
        """Load the full model once on the CPU, keep only the head (startup cost only)."""
        from transformers import AutoModelForCausalLM

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        try:
            return cls.from_model(model, device)
        finally:
            del model

    @property
    def vocab_size(self) -> int:
        return int(self.unembed.shape[0])

    @torch.inference_mode()
    def logits(self, directions: torch.Tensor) -> torch.Tensor:
        """``[n, d_model]`` directions -> ``[n, vocab]`` float32 logits."""
        x = self.norm(directions.to(self.unembed.device, torch.float32))
        out = x @ self.unembed.T
        if self.softcap:
            out = self.softcap * torch.tanh(out / self.softcap)
        return out


class DecoderRows:
    """Every served SAE's decoder matrix that the output side can read, kept in its stored
    dtype on the CPU; rows are handed out as float32 on request. The decoder is read from
    SAELens folders (``W_dec``); an SAE served from another format has none here, and asking
    for its rows says so rather than guessing a layout."""

    def __init__(self, sources: Mapping[str, SaeSource]) -> None:
        from safetensors.torch import load_file

        self._w: dict[str, torch.Tensor] = {}
        self._missing: dict[str, str] = {}
        for sae_id, spec in sources.items():
            weights_file = Path(spec.source) / "sae_weights.safetensors"
            if not weights_file.is_file():
                self._missing[sae_id] = f"{spec.source} is not a SAELens folder"
                continue
            weights = load_file(str(weights_file), device="cpu")
            if "W_dec" not in weights:
                raise OutputHeadError(f"SAE {sae_id!r}: sae_weights.safetensors has no W_dec")
            self._w[sae_id] = weights["W_dec"]

    def rows(self, sae_id: str, features: Sequence[int]) -> torch.Tensor:
        if sae_id not in self._w:
            raise OutputHeadError(f"SAE {sae_id!r} has no decoder the output side can read "
                                  f"({self._missing.get(sae_id, 'not served')}); the logit lens and steering "
                                  "need a SAELens folder with W_dec")
        return self._w[sae_id][list(features)].float()


@dataclass(frozen=True)
class TokenEffect:
    token_id: int
    value: float


@dataclass(frozen=True)
class FeatureLens:
    feature_id: int
    decoder_norm: float
    promoted: list[TokenEffect]  # highest logit first
    suppressed: list[TokenEffect]  # lowest logit first


def logit_lens(
    head: OutputHead, decoder: DecoderRows, sae_id: str, features: Sequence[int], k: int,
    skip_ids: frozenset[int] = frozenset(),
) -> list[FeatureLens]:
    """Top-k promoted and suppressed tokens per feature; ``skip_ids`` (special tokens)
    never appear, since they are never what a feature "says"."""
    rows = decoder.rows(sae_id, features)
    logits = head.logits(rows).cpu()
    if skip_ids:
        keep = torch.ones(logits.shape[1], dtype=torch.bool)
        keep[[i for i in skip_ids if i < logits.shape[1]]] = False
    out = []
    for i, f in enumerate(features):
        row = logits[i]
        hi = row.masked_fill(~keep, -torch.inf) if skip_ids else row
        lo = row.masked_fill(~keep, torch.inf) if skip_ids else row
        top = torch.topk(hi, k)
        bottom = torch.topk(lo, k, largest=False)
        out.append(FeatureLens(
            feature_id=int(f),
            decoder_norm=float(rows[i].norm()),
            promoted=[TokenEffect(int(t), float(v)) for v, t in zip(top.values, top.indices, strict=True)],
            suppressed=[TokenEffect(int(t), float(v)) for v, t in zip(bottom.values, bottom.indices, strict=True)],
        ))
    return out
