"""Steered generation on the full model: push one SAE feature at its hook and compare
with the unsteered continuation.

Conventions (../docs causal.md §2, §4.1):
  * ``add``:   h <- h + α·d_f          (exact with the SAE error term kept)
  * ``clamp``: h <- h + (c - a_f(h))·d_f  (the latent set to c, error term kept)
  * positions: the last prompt token and every generated token (default), or every
    prompt and generated token (``all``). Prompts are left-padded, so the last
    prompt token is the last column of the prefill for every row.
  * KL: KL(unsteered ‖ steered) of the next-token distribution at the last prompt
    position (the first generated token's distribution), in nats.

Unsteered and steered runs are two passes of identical shape with the same sampling
seed, so with a zero edit they are the same computation: strength 0 is byte-identical
to no steering. Everything here runs on one worker thread (``GenerationRunner``),
which checks its cancel event between forward passes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sagex.activation.encode import FeatureIds, encode_sparse
from sagex.activation.hooks import HookTable
from sagex.activation.sae import EncoderParams

Mode = Literal["add", "clamp"]
Positions = Literal["last_and_generated", "all"]


class Stopped(Exception):
    """The caller cancelled, or its deadline passed, between two forward passes."""


@dataclass(frozen=True)
class Steer:
    """What to do to the hidden state at the SAE's hook."""

    layer: int
    direction: torch.Tensor  # [d_model] float32, the decoder row d_f
    mode: Mode
    strength: float  # α for add, the clamp value c for clamp
    positions: Positions = "last_and_generated"
    params: EncoderParams | None = None  # clamp reads a_f through the SAE encoder
    feature: int = 0


@dataclass(frozen=True)
class Continuation:
    prompt_ids: list[int]
    unsteered_ids: list[int]
    steered_ids: list[int]
    kl: float  # nats, first generated position


@dataclass(frozen=True)
class Watch:
    """Cooperative stop: a cancel event and an absolute deadline (time.monotonic())."""

    cancel: threading.Event
    deadline: float | None = None

    def check(self) -> None:
        if self.cancel.is_set():
            raise Stopped("cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Stopped("deadline")


class SteerableLM:
    """The whole causal LM (every layer, norm and head) with an editing hook on each
    SAE hook layer. Not thread-safe: one worker thread owns it."""

    def __init__(self, model: nn.Module, pad_id: int, eos_ids: Sequence[int], device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.pad_id = pad_id
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        table = HookTable(model)
        self.layers_path = table.layers_path
        self.layers = model.get_submodule(table.layers_path)
        self._steer: Steer | None = None
        self._prefill_mask: torch.Tensor | None = None  # [B, T] bool of positions to edit at prefill
        self._prefill = True
        self.edited_positions: list[int] = []  # per forward pass: positions edited (sanity check 2)
        self._hooks: dict[int, object] = {}

    def steerable_hook(self, layer: int) -> str:
        """The hook point key steering edits for ``layer``: the residual stream after that
        decoder layer (``blocks.L.hook_resid_post``), where add and clamp are defined."""
        return f"{self.layers_path}.{layer}.output"

    def _hook_for(self, layer: int) -> None:
        if layer in self._hooks:
            return

        def hook(_module: nn.Module, _inputs: object, output: object) -> object:
            s = self._steer
            if s is None or s.layer != layer:
                return output
            h = output[0] if isinstance(output, tuple) else output
            h = self._edit(h, s)
            return (h, *output[1:]) if isinstance(output, tuple) else h

        self._hooks[layer] = self.layers[layer].register_forward_hook(hook)

    def _edit(self, h: torch.Tensor, s: Steer) -> torch.Tensor:
        if self._prefill:
            mask = self._prefill_mask
            assert mask is not None
        else:
            mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        self.edited_positions.append(int(mask.sum()))
        d = s.direction.to(h.device, h.dtype)
        if s.mode == "add":
            delta = mask.unsqueeze(-1).to(h.dtype) * (s.strength * d)
            return h + delta
        # clamp: a_f at the edited positions through the SAE encoder, then move to c.
        assert s.params is not None
        x = h[mask].float()
        rows = encode_sparse(x, s.params, FeatureIds((s.feature,)))
        a = rows.to_dense(s.params.d_sae)[:, s.feature].to(h.device) if x.shape[0] else x.new_zeros(0)
        out = h.clone()
        out[mask] = (x + (s.strength - a).unsqueeze(-1) * d.float()).to(h.dtype)
        return out

    # --- passes -------------------------------------------------------------------

    def _left_pad(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
            mask[row, width - len(p):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _set(self, steer: Steer | None, mask: torch.Tensor) -> None:
        self._steer = steer
        if steer is not None:
            self._hook_for(steer.layer)
            if steer.positions == "all":
                self._prefill_mask = mask.bool()
            else:
                last = torch.zeros_like(mask, dtype=torch.bool)
                last[:, -1] = True
                self._prefill_mask = last

    @torch.inference_mode()
    def next_token_logprobs(self, prompts: Sequence[Sequence[int]], steer: Steer | None) -> torch.Tensor:
        """Log-probabilities ``[B, vocab]`` (float32) of the token after each prompt."""
        ids, mask = self._left_pad(prompts)
        self._set(steer, mask)
        self._prefill = True
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=False,
                             logits_to_keep=1)
        finally:
            self._steer = None
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[Sequence[int]], steer: Steer | None, max_new_tokens: int, temperature: float,
        seed: int, watch: Watch,
    ) -> tuple[list[list[int]], torch.Tensor]:
        """New token ids per prompt (cut after the first EOS) and the first step's log-probs."""
        from transformers import DynamicCache

        ids, mask = self._left_pad(prompts)
        self._set(steer, mask)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        cache = DynamicCache(config=self.model.config)
        out_ids: list[torch.Tensor] = []
        first: torch.Tensor | None = None
        step_ids, positions = ids, _positions(mask)
        try:
            for step in range(max_new_tokens):
                watch.check()
                self._prefill = step == 0
                out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                                 past_key_values=cache, use_cache=True, logits_to_keep=1)
                logits = out.logits[:, -1].float()
                if first is None:
                    first = torch.log_softmax(logits, dim=-1)
                nxt = _sample(logits, temperature, gen).to(self.device)
                out_ids.append(nxt)
                step_ids = nxt.unsqueeze(1)
                positions = positions[:, -1:] + 1
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        finally:
            self._steer = None
        assert first is not None
        tokens = torch.stack(out_ids, dim=1).cpu().tolist() if out_ids else [[] for _ in prompts]
        return [self._cut(t) for t in tokens], first

    def _cut(self, tokens: list[int]) -> list[int]:
        for i, t in enumerate(tokens):
            if t in self.eos_ids:
                return tokens[: i + 1]
        return tokens

    # --- the operation the RPC runs -----------------------------------------------------

    def steer(
        self, prompts: Sequence[Sequence[int]], steer: Steer, max_new_tokens: int, temperature: float, seed: int,
        watch: Watch,
    ) -> list[Continuation]:
        clean, lp_clean = self.generate(prompts, None, max_new_tokens, temperature, seed, watch)
        steered, lp_steer = self.generate(prompts, steer, max_new_tokens, temperature, seed, watch)
        kls = kl_divergence(lp_clean, lp_steer)
        return [
            Continuation(list(p), c, s, float(k))
            for p, c, s, k in zip(prompts, clean, steered, kls.tolist(), strict=True)
        ]

    def calibrate(
        self, prompts: Sequence[Sequence[int]], steer: Steer, target_kl: float, watch: Watch, max_steps: int = 12,
        tolerance: float = 0.1,
    ) -> Calibration:
        """α (sign of ``steer.strength``) whose mean first-token KL over ``prompts`` is within
        ``tolerance`` (relative) of ``target_kl``: bisection on log α over 10⁻²…10³ × ‖h‖/‖d_f‖."""
        watch.check()
        clean = self.next_token_logprobs(prompts, None)
        sign = -1.0 if steer.strength < 0 else 1.0
        scale = self._residual_norm(prompts, steer.layer) / max(float(steer.direction.norm()), 1e-12)
        lo, hi = math.log(1e-2 * scale), math.log(1e3 * scale)
        steps = 0

        def kl_at(log_alpha: float) -> float:
            nonlocal steps
            watch.check()
            steps += 1
            s = Steer(**{**steer.__dict__, "strength": sign * math.exp(log_alpha), "mode": "add"})
            return float(kl_divergence(clean, self.next_token_logprobs(prompts, s)).mean())

        top = kl_at(hi)
        if top < target_kl * (1 - tolerance):
            return Calibration(sign * math.exp(hi), top, steps, reached=False)
        best = (sign * math.exp(hi), top)
        while steps < max_steps:
            mid = (lo + hi) / 2
            kl = kl_at(mid)
            if abs(kl - target_kl) < abs(best[1] - target_kl):
                best = (sign * math.exp(mid), kl)
            if abs(kl - target_kl) <= tolerance * target_kl:
                return Calibration(sign * math.exp(mid), kl, steps, reached=True)
            lo, hi = (mid, hi) if kl < target_kl else (lo, mid)
        return Calibration(best[0], best[1], steps, reached=abs(best[1] - target_kl) <= tolerance * target_kl)

    def _residual_norm(self, prompts: Sequence[Sequence[int]], layer: int) -> float:
        """Median norm of the last prompt token's residual at ``layer`` (the scale of α)."""
        norms: list[float] = []

        def grab(_m: nn.Module, _i: object, output: object) -> None:
            h = output[0] if isinstance(output, tuple) else output
            norms.extend(h[:, -1].float().norm(dim=-1).tolist())

        handle = self.layers[layer].register_forward_hook(grab)
        try:
            self.next_token_logprobs(prompts, None)
        finally:
            handle.remove()
        norms.sort()
        return norms[len(norms) // 2] if norms else 1.0


@dataclass(frozen=True)
class Calibration:
    strength: float
    kl: float
    steps: int
    reached: bool


def kl_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row from log-probabilities, in nats, never negative."""
    return (logp.exp() * (logp - logq)).sum(dim=-1).clamp_min(0.0)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(dim=1) - 1).clamp_min(0)


def _sample(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.cpu() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)
