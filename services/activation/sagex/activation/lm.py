"""A Hugging Face causal LM cut at the deepest hook layer.

Layers after the deepest hook are deleted at load, and the forward pass stops
(by an exception raised from the last kept layer's hook) before the final norm
and the LM head, so no FLOP is spent past the residual stream we read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch
from torch import nn

from sagex.activation.spans import span_texts, token_spans

log = structlog.get_logger(__name__)


class _StopForward(Exception):
    """Raised by the last kept layer's hook: everything after it is dead work."""


@dataclass(frozen=True)
class Tokenized:
    ids: list[int]
    texts: list[str]
    special_positions: list[int]
    # (start, end) character offsets of each token in the input text, when there was one
    # (sagex.activation.spans); None for token-id input.
    spans: list[tuple[int, int]] | None = None


def _decoder_layers(model: nn.Module, num_layers: int) -> tuple[nn.Module, str, nn.ModuleList]:
    """Find the ModuleList of decoder blocks (``model.layers``, ``transformer.h``, ...)."""
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    if not candidates:
        raise ValueError(f"no ModuleList of {num_layers} decoder layers found in {type(model).__name__}")
    name, layers = min(candidates, key=lambda c: c[0].count("."))  # the outermost one
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr, layers  # type: ignore[return-value]


class TruncatedLM:
    """Tokenizer + the LM's blocks ``0..max(hook_layers)``, returning hidden states
    at each hook layer's output (the residual stream after the block)."""

    def __init__(
        self,
        model_dir: Path,
        hook_layers: Sequence[int],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        prepend_bos: bool | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        config = model.config
        self.name = Path(model_dir).name
        self.model_dir = Path(model_dir)
        self.architecture = (config.architectures or [type(model).__name__])[0]
        self.num_layers = int(config.num_hidden_layers)
        self.d_model = int(config.hidden_size)
        self.vocab_size = int(config.vocab_size)
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self.max_positions: int | None = int(positions) if positions else None
        self.device = device
        self.dtype = dtype
        self.hook_layers = sorted(set(hook_layers))
        if not self.hook_layers or self.hook_layers[-1] >= self.num_layers or self.hook_layers[0] < 0:
            raise ValueError(f"hook layers {self.hook_layers} outside the model's 0..{self.num_layers - 1}")
        self.loaded_layers = self.hook_layers[-1] + 1

        # Keep only the transformer trunk (no LM head) and only the layers we read.
        self.base: nn.Module = model.base_model
        parent, attr, layers = _decoder_layers(self.base, self.num_layers)
        setattr(parent, attr, nn.ModuleList(list(layers)[: self.loaded_layers]))
        del model, layers
        self.base.to(device).eval()
        kept: nn.ModuleList = getattr(parent, attr)
        self._captured: dict[int, torch.Tensor] = {}
        for layer in self.hook_layers:
            kept[layer].register_forward_hook(self._capture_hook(layer, stop=layer == self.loaded_layers - 1))

        self.special_ids = set(self.tokenizer.all_special_ids)
        bos = self.tokenizer.bos_token_id
        default_bos = bos is not None and self.tokenizer("a").input_ids[:1] == [bos]
        self.prepend_bos = default_bos if prepend_bos is None else prepend_bos
        if self.prepend_bos and bos is None:
            raise ValueError("prepend_bos is set but the tokenizer has no BOS token")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        log.info("lm_loaded", model=self.name, layers=f"{self.loaded_layers}/{self.num_layers}", device=str(device))

    def _capture_hook(self, layer: int, stop: bool):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            self._captured[layer] = output[0] if isinstance(output, tuple) else output  # type: ignore[assignment]
            if stop:
                raise _StopForward

        return hook

    # --- tokens ------------------------------------------------------------

    @property
    def prefix(self) -> tuple[int, ...]:
        """Tokens every sequence starts with: (BOS,) or ()."""
        return (self.tokenizer.bos_token_id,) if self.prepend_bos else ()

    def content_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def encode_text(self, text: str) -> list[int]:
        return [*self.prefix, *self.content_ids(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of a whole sequence (single-token decodes lose SentencePiece spaces)."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def describe_text(self, text: str) -> Tokenized:
        """``text`` tokenized as ``encode_text`` does, each token's text its span of ``text``
        (so the texts join back into it, multi-byte characters whole)."""
        try:
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # a slow (Python) tokenizer has no offsets: decode per token
            return self.describe(self.encode_text(text))
        ids = [*self.prefix, *encoded.input_ids]
        spans = token_spans(encoded.offset_mapping, len(text), prefix=len(self.prefix))
        special = [i for i, t in enumerate(ids) if t in self.special_ids]
        return Tokenized(ids, span_texts(text, spans), special, spans)

    def describe(self, ids: Sequence[int]) -> Tokenized:
        texts = self.tokenizer.batch_decode([[i] for i in ids])
        special = [i for i, t in enumerate(ids) if t in self.special_ids]
        return Tokenized(list(ids), texts, special)

    # --- forward -----------------------------------------------------------

    @torch.inference_mode()
    def hidden_states(self, batch: Sequence[Sequence[int]]) -> dict[int, list[torch.Tensor]]:
        """Run right-padded token lists; return, per hook layer, one ``[len_i, d_model]``
        tensor per input (padding removed). Right padding keeps every real token's
        causal context identical to an unpadded run."""
        lengths = [len(ids) for ids in batch]
        width = max(lengths)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        self._captured.clear()
        try:
            self.base(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        except _StopForward:
            pass
        out = {layer: [self._captured[layer][row, :n] for row, n in enumerate(lengths)] for layer in self.hook_layers}
        self._captured.clear()
        return out
