"""ActivationEngine: the model, the SAEs and one forward+encode step. Plain Python,
synchronous, no gRPC: the batcher calls ``run`` from its worker thread."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from sagex.activation import conventions
from sagex.activation.assets.model import convert_gguf, ensure_embedded_model
from sagex.activation.assets.paths import cache_dir
from sagex.activation.config import ActivationConfig
from sagex.activation.encode import Selection, SparseRows, Threshold, encode_sparse
from sagex.activation.formats import load_sae_file
from sagex.activation.hooks import HookError
from sagex.activation.lm import Tokenized, TruncatedLM
from sagex.activation.sae import EncoderParams, LoadedSae, SaeLoadError

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
        self._transforms: dict[str, conventions.Transform] = {}
        dtype = DTYPES[config.dtype]
        self.saes = self._load(config, dtype)
        limit = self.lm.max_positions
        longest = max(config.max_tokens_per_text, config.window_tokens + len(self.lm.prefix))
        if limit is not None and longest > limit:
            raise ValueError(
                f"max_tokens_per_text/window_tokens allow {longest} tokens but the model has "
                f"{limit} positions; lower them"
            )
        self.encode_backend = "triton" if self.device.type == "cuda" else "torch"

    def _load(self, config: ActivationConfig, dtype: torch.dtype) -> dict[str, LoadedSae]:
        """Read every SAE, resolve its hook on the model, check its basis and width.
        Every refusal is a SaeLoadError naming the SAE and what to fix."""
        sources = config.served_saes()
        files = {sid: load_sae_file(sid, src, config.hf_cache_dir) for sid, src in sources.items()}
        plans: dict[str, conventions.Plan] = {}
        for sid, f in files.items():
            try:
                plans[sid] = conventions.plan(f.hook_name, f.meta)
            except SaeLoadError as exc:
                raise SaeLoadError(f"SAE {sid!r} ({f.source}): {exc}") from exc
        try:
            self.lm = TruncatedLM(
                resolve_model_dir(config.model), [p.hook_name for p in plans.values()], self.device, dtype,
                config.prepend_bos,
            )
        except HookError as exc:
            users = ", ".join(repr(sid) for sid, p in plans.items() if p.hook_name == exc.hook)
            raise SaeLoadError(f"SAE {users}: {exc}") from exc
        widths = self.lm.hook_widths()
        saes: dict[str, LoadedSae] = {}
        for sid, f in files.items():
            point = self.lm.hooks[plans[sid].hook_name]
            try:
                tf = conventions.transform(plans[sid], point, self.lm.hook_table, f.meta)
            except SaeLoadError as exc:
                raise SaeLoadError(f"SAE {sid!r} ({f.source}): {exc}") from exc
            width = tf.width(widths[point.key])
            if f.params.d_in != width:
                raise SaeLoadError(
                    f"SAE {sid!r} ({f.source}) reads d_in={f.params.d_in}, but its hook {f.hook_name!r} "
                    f"({point.hf_name}{', one head' if tf.head is not None else ''}) has width {width} on this "
                    "model: the SAE was trained on another model or hook"
                )
            params = f.params
            params = EncoderParams(**{**params.__dict__, "w_enc": params.w_enc.to(dtype).contiguous()}).to(self.device)
            saes[sid] = LoadedSae(
                id=sid, hook_name=f.hook_name, hook_layer=point.layer, params=params,
                content_hash=f.content_hash if tf.name == "none" else f"{f.content_hash}-{tf.name}",
                dtype=str(dtype).removeprefix("torch."), hook_key=point.key, tl_hook_name=point.tl_name,
                hf_hook_name=point.hf_name, transform=tf.name, convention=plans[sid].label, format=f.format,
                source=f.source, kind=f.kind, hook_name_out=f.hook_name_out,
            )
            self._transforms[sid] = tf
            self._warn_mismatches(sid, f.meta)
        return saes

    def _warn_mismatches(self, sae_id: str, meta: Mapping[str, Any]) -> None:
        """Facts the server cannot check exactly but a user should see: another model's name,
        another BOS rule than the server's (one tokenisation serves every SAE)."""
        trained = str(meta.get("model_name") or "").rsplit("/", 1)[-1].lower()
        served = self.lm.name.lower()
        if trained and trained not in served and served not in trained:
            log.warning("sae_model_name_differs", sae=sae_id, trained_on=meta.get("model_name"), served=self.lm.name)
        bos = meta.get("prepend_bos")
        if isinstance(bos, bool) and bos != self.lm.prepend_bos:
            log.warning("sae_prepend_bos_differs", sae=sae_id, sae_prepend_bos=bos,
                        server_prepend_bos=self.lm.prepend_bos)

    def hook_input(self, sae: LoadedSae, x: torch.Tensor) -> torch.Tensor:
        """The captured tensor in the basis the SAE was trained on."""
        tf = self._transforms[sae.id]
        if tf.head is not None:
            x = x.unflatten(-1, (tf.n_heads, -1))[..., tf.head, :].contiguous()
        if tf.center:
            x = x.float()
            x = x - x.mean(-1, keepdim=True)
        if tf.scale != 1.0:
            x = x.float() * tf.scale
        return x

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
            x = self.hook_input(sae, torch.cat([hidden[sae.hook_key][i] for i in members]))
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
