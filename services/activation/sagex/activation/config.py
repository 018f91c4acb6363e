"""ActivationConfig: the one configuration object of the activation service."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sagex.activation.assets.paths import EMBEDDED_SAE_DIR, EMBEDDED_SAE_ID
from sagex.activation.formats import SaeSource, looks_like_release
from sagex.server.lifecycle import ServerOptions

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class ActivationConfig:
    """Everything the activation service needs; validated on construction.

    ``model`` is a local transformers folder or a ``.gguf`` file; None means the
    embedded SmolLM2-135M-Instruct. ``saes`` is the server-side allowlist: id ->
    source (a folder in any format ``sagex.activation.formats`` reads, a SAELens
    release id ``release/sae_id`` found in the Hugging Face cache, or a ``SaeSource``
    with an explicit hook). With the embedded model the embedded SAE is served *too*
    (``embedded_sae = false`` drops it). Requests name an id, never a path.
    """

    model: Path | None = None
    saes: dict[str, Path | str | SaeSource] = field(default_factory=dict)
    embedded_sae: bool = True  # add the embedded SAE when serving the embedded model
    hf_cache_dir: Path | None = None  # release ids are looked up here; None: huggingface_hub's default
    device: str = "auto"  # "auto" picks cuda when available
    dtype: str = "float32"  # LM and SAE weights; bf16 is slower than fp32 on CPU
    prepend_bos: bool | None = None  # None: the tokenizer's own default
    corpus_dir: Path | None = None  # None: the embedded corpus in the cache
    mining_cache_dir: Path | None = None  # None: <cache>/mining
    # Limits (each breach gets INVALID_ARGUMENT or RESOURCE_EXHAUSTED, saying which).
    max_texts_per_batch: int = 256
    max_chars_per_text: int = 20_000
    max_tokens_per_text: int = 1024
    max_feature_ids: int = 1024
    max_top_k: int = 256
    max_response_bytes: int = 256 * 1024  # 32-512 KiB messages stream fastest
    max_inflight_batches_per_stream: int = 8
    # Dynamic batching.
    batch_token_budget: int = 4096  # padded tokens per forward pass
    max_queue_texts: int = 4096  # texts waiting for the GPU; more is RESOURCE_EXHAUSTED
    # Exemplar mining.
    window_tokens: int = 64
    max_mining_tokens: int = 400_000  # per split; bounds the first scan's time
    mining_batch_windows: int = 32
    # Hash shards of an index (part of its cache key; fewer for a small split, each at least
    # one block): the unit of work replicas share, and what makes an index the same bits
    # however many replicas mined it.
    mining_shards: int = 8
    # Batches per block: a shard's windows are packed by length within a block, checkpointed after each.
    mining_block_batches: int = 64
    # Output side. The logit lens is always served; SteerGenerate needs the full model
    # (every layer after the hook, the final norm and the LM head), which costs memory: opt in.
    steering: bool = False
    max_steer_prompts: int = 32  # >= the intervention scorer's 20 neutral prompts, which come in one request
    max_steer_new_tokens: int = 64
    max_steer_strength: float = 1000.0  # |α| and |clamp value|, in units of the decoder row
    max_steer_queue: int = 8  # generations waiting or running; more is RESOURCE_EXHAUSTED
    server: ServerOptions = field(default_factory=lambda: ServerOptions(port=DEFAULT_PORT))

    def __post_init__(self) -> None:
        problems = []
        if not self.served_saes():
            problems.append("saes: configure at least one SAE")
        for sae_id, value in self.saes.items():
            src = SaeSource.of(value)
            if not sae_id or "/" in sae_id:
                problems.append(f"saes: id {sae_id!r} must be non-empty and contain no '/'")
            if not Path(src.source).expanduser().is_dir() and not looks_like_release(src.source):
                problems.append(f"saes.{sae_id}: {src.source} is not a folder (nor a release id 'release/sae_id')")
        if self.model is not None and not Path(self.model).exists():
            problems.append(f"model: {self.model} does not exist")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device: {self.device!r} is not auto, cpu or cuda[:N]")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            problems.append(f"dtype: {self.dtype!r} is not float32, float16 or bfloat16")
        for name in ("max_texts_per_batch", "max_chars_per_text", "max_tokens_per_text", "max_feature_ids",
                     "max_top_k", "batch_token_budget", "max_queue_texts", "window_tokens", "max_mining_tokens",
                     "max_inflight_batches_per_stream", "mining_batch_windows", "max_steer_prompts",
                     "max_steer_new_tokens", "max_steer_strength", "max_steer_queue", "mining_shards",
                     "mining_block_batches"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}: must be > 0")
        if self.max_response_bytes < 4096:
            problems.append("max_response_bytes: must be >= 4096")
        if self.max_queue_texts < max(self.max_texts_per_batch, self.mining_batch_windows):
            problems.append("max_queue_texts: must hold at least one full batch "
                            "(max_texts_per_batch, mining_batch_windows)")
        if self.mining_shards > 4096:
            problems.append("mining_shards: must be <= 4096")
        if self.mining_batch_windows * (self.window_tokens + 1) > self.batch_token_budget:
            problems.append("mining_batch_windows * (window_tokens + 1) must be <= batch_token_budget: a mining "
                            "batch is one forward pass of its own")
        if self.batch_token_budget < self.max_tokens_per_text:
            problems.append("batch_token_budget: must be >= max_tokens_per_text so every text fits a batch")
        if problems:
            raise ValueError("invalid activation config: " + "; ".join(problems))

    def served_saes(self) -> dict[str, SaeSource]:
        """Every SAE the server loads: the embedded one (with the embedded model, unless
        ``embedded_sae`` is off) plus ``saes``; an id in ``saes`` wins."""
        out: dict[str, SaeSource] = {}
        if self.model is None and self.embedded_sae:
            out[EMBEDDED_SAE_ID] = SaeSource(str(EMBEDDED_SAE_DIR))
        out.update({k: SaeSource.of(v) for k, v in self.saes.items()})
        return out

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> ActivationConfig:
        """Read ``[activation]`` (and ``[activation.saes]``, ``[activation.server]``) from a TOML file.
        Relative paths are relative to the file."""
        data = tomllib.loads(Path(path).read_text()).get("activation", {})
        base = Path(path).parent
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown activation settings {sorted(unknown)}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "saes":
                kwargs["saes"] = {k: _toml_source(base, v, f"{path}: saes.{k}") for k, v in value.items()}
            elif key == "server":
                kwargs["server"] = ServerOptions.from_table(value, base, f"{path}: [activation.server]")
            elif key in ("model", "corpus_dir", "mining_cache_dir", "hf_cache_dir"):
                kwargs[key] = base / value
            else:
                kwargs[key] = value
        return cls(**{**kwargs, **overrides})

    def with_server(self, **changes: Any) -> ActivationConfig:
        return replace(self, server=replace(self.server, **changes))


def _toml_source(base: Path, value: Any, where: str) -> Path | str | SaeSource:
    """A TOML SAE entry: "folder-or-release" or { source = "...", hook = "..." }."""
    if isinstance(value, dict):
        unknown = set(value) - {"source", "hook"}
        if unknown or "source" not in value:
            raise ValueError(f"{where}: expected {{ source = ..., hook = ... }}, got keys {sorted(value)}")
        src = _toml_source(base, value["source"], where)
        return SaeSource(str(src), value.get("hook"))
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a folder, a release id or a table")
    local = base / value
    return value if (not local.exists() and looks_like_release(value)) else local
