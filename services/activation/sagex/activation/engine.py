"""ActivationEngine: the model, the SAEs and one forward+encode step. Plain Python,
synchronous, no gRPC: the batcher calls ``run`` from its worker thread."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch

from sagex.activation.assets.model import convert_gguf, ensure_embedded_model
from sagex.activation.assets.paths import cache_dir
from sagex.activation.config import ActivationConfig
from sagex.activation.encode import Selection, SparseRows, Threshold, encode_sparse
from sagex.activation.lm import Tokenized, TruncatedLM
from sagex.activation.sae import LoadedSae, load_sae

log = structlog.get_logger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class WorkItem:
    """One text's worth of work: its token ids, the SAE and what to return."""

    ids: tuple[int, ...]
    sae_id: str
    selection: Selection


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def resolve_model_dir(model: Path | None) -> Path:
    """A transformers folder for the configured model (GGUF files are converted once)."""
    if model is None:
        return ensure_embedded_model()
    if model.suffix == ".gguf":
        # Keyed by the file's identity, so another GGUF of the same name (or this one
        # replaced in place) never reuses a stale conversion.
        stat = model.stat()
        ident = hashlib.sha256(f"{model.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        out = cache_dir() / "models" / f"{model.stem}-{ident}"
        return out if (out / "config.json").is_file() else convert_gguf(model, out)
    return model


class ActivationEngine:
    """Holds the truncated LM and every allowlisted SAE on one device."""

    def __init__(self, config: ActivationConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        dtype = DTYPES[config.dtype]
        self.saes: dict[str, LoadedSae] = {}
        for sae_id, folder in config.saes.items():
            sae = load_sae(sae_id, folder, dtype=dtype)
            self.saes[sae_id] = LoadedSae(**{**sae.__dict__, "params": sae.params.to(self.device)})
        self.lm = TruncatedLM(
            resolve_model_dir(config.model),
            [s.hook_layer for s in self.saes.values()],
            self.device,
            dtype,
            config.prepend_bos,
        )
        for sae in self.saes.values():
            if sae.params.d_in != self.lm.d_model:
                raise ValueError(
                    f"SAE {sae.id!r} reads d_in={sae.params.d_in} but the model has d_model={self.lm.d_model}"
                )
        limit = self.lm.max_positions
        longest = max(config.max_tokens_per_text, config.window_tokens + len(self.lm.prefix))
        if limit is not None and longest > limit:
            raise ValueError(
                f"max_tokens_per_text/window_tokens allow {longest} tokens but the model has "
                f"{limit} positions; lower them"
            )
        self.encode_backend = "triton" if self.device.type == "cuda" else "torch"

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.lm.encode_text(t) for t in texts]

    def describe(self, ids: Sequence[int]) -> Tokenized:
        return self.lm.describe(ids)

    def describe_texts(self, texts: Sequence[str]) -> list[Tokenized]:
        """Tokens of each text with their character spans (the same ids as ``tokenize``)."""
        return [self.lm.describe_text(t) for t in texts]

    def run(self, items: Sequence[WorkItem]) -> list[SparseRows]:
        """One shared forward pass for all items, then one encode per (SAE, selection) group."""
        hidden = self.lm.hidden_states([it.ids for it in items])
        groups: dict[tuple[str, Selection], list[int]] = defaultdict(list)
        for i, it in enumerate(items):
            groups[(it.sae_id, it.selection)].append(i)
        results: list[SparseRows | None] = [None] * len(items)
        for (sae_id, selection), members in groups.items():
            sae = self.saes[sae_id]
            x = torch.cat([hidden[sae.hook_layer][i] for i in members])
            rows = encode_sparse(x, sae.params, selection)
            rows = SparseRows(rows.row_offsets.cpu(), rows.feature_ids.cpu(), rows.values.cpu())
            start = 0
            for i in members:
                n = len(items[i].ids)
                results[i] = rows.slice_rows(start, start + n)
                start += n
        return results  # type: ignore[return-value]

    def warmup(self) -> None:
        """One tiny request per SAE, so the first real request pays no lazy init."""
        ids = tuple(self.tokenize(["Warm up the model."])[0])
        self.run([WorkItem(ids, sae_id, Threshold(0.0)) for sae_id in self.saes])
        log.info("engine_warm", saes=list(self.saes), backend=self.encode_backend)
