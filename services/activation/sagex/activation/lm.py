"""A Hugging Face causal LM cut at the deepest hook layer.

Hook names (TransformerLens or HF, see ``hooks``) are resolved against the full
model; layers after the deepest hook's layer are deleted at load, and the forward
pass stops (by an exception raised at that layer's output) before the final norm
and the LM head, so no FLOP is spent past what we read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch
from torch import nn

from sagex.activation.hooks import HookCapture, HookPoint, HookTable, StopForward, deepest_layer
from sagex.activation.spans import span_texts, token_spans

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Tokenized:
    ids: list[int]
    texts: list[str]
    special_positions: list[int]
    # (start, end) character offsets of each token in the input text, when there was one
    # (sagex.activation.spans); None for token-id input.
    spans: list[tuple[int, int]] | None = None


class TruncatedLM:
    """Tokenizer + the LM's blocks ``0..deepest hook layer``, returning the activations
    at each requested hook point (keyed by ``HookPoint.key``)."""

    def __init__(
        self,
        model_dir: Path,
        hook_names: Sequence[str],
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
        # Resolve every hook name on the whole model first: a name it lacks is refused here,
        # with the names it has.
        self.hook_table = HookTable(model)
        self.hooks: dict[str, HookPoint] = {name: self.hook_table.resolve(name) for name in hook_names}
        if not self.hooks:
            raise ValueError("no hooks to read")
        deepest = deepest_layer(self.hooks.values())
        self.loaded_layers = deepest + 1
        stop = self.hook_table.layer_path(deepest) if deepest >= 0 else self.hook_table.embed_path

        # Keep only the transformer trunk (no LM head) and only the layers we read. The hooks
        # hold the module objects, so replacing the layer list does not detach them.
        self._capture = HookCapture(self.hook_table, self.hooks.values(), stop)
        self.hook_table.release()
        self.base: nn.Module = model.base_model
        parent_name, _, attr = self.hook_table.layers_path.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layers = getattr(parent, attr)
        setattr(parent, attr, nn.ModuleList(list(layers)[: max(self.loaded_layers, 1)]))
        del model, layers
        self.base.to(device).eval()

        self.special_ids = set(self.tokenizer.all_special_ids)
        bos = self.tokenizer.bos_token_id
        default_bos = bos is not None and self.tokenizer("a").input_ids[:1] == [bos]
        self.prepend_bos = default_bos if prepend_bos is None else prepend_bos
        if self.prepend_bos and bos is None:
            raise ValueError("prepend_bos is set but the tokenizer has no BOS token")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        log.info("lm_loaded", model=self.name, layers=f"{self.loaded_layers}/{self.num_layers}", device=str(device))

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
    def hidden_states(self, batch: Sequence[Sequence[int]]) -> dict[str, list[torch.Tensor]]:
        """Run right-padded token lists; return, per hook point key, one ``[len_i, width]``
        tensor per input (padding removed). Right padding keeps every real token's
        causal context identical to an unpadded run."""
        lengths = [len(ids) for ids in batch]
        width = max(lengths)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        self._capture.take()
        try:
            self.base(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        except StopForward:
            pass
        captured = self._capture.take()
        return {key: [captured[key][row, :n] for row, n in enumerate(lengths)] for key in captured}

    def hook_widths(self) -> dict[str, int]:
        """The last dimension of every hook point, measured on a one-token pass."""
        return {key: int(xs[0].shape[-1]) for key, xs in self.hidden_states([[self.pad_id]]).items()}
