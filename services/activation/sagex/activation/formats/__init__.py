"""SAE file formats: one registry, one small module per format.

A source is a folder (its files say which format it is) or a SAELens release id
``release/sae_id`` resolved through the local Hugging Face cache. Every loader
returns an ``SaeFile``: the encoder folded to ``EncoderParams`` plus the facts the
server needs to place it (hook name, transcoder target, SAELens-style metadata
such as ``model_from_pretrained_kwargs``). Nothing here knows the served model;
``engine`` resolves hooks and ``conventions`` checks the training basis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagex.activation.sae import EncoderParams, SaeLoadError


@dataclass(frozen=True)
class SaeSource:
    """Where an SAE comes from: a folder or ``release/sae_id``; ``hook`` overrides the
    hook its files name (needed for formats that name none, e.g. a bare ``params.npz``)."""

    source: str
    hook: str | None = None

    @staticmethod
    def of(value: SaeSource | Path | str) -> SaeSource:
        return value if isinstance(value, SaeSource) else SaeSource(str(value))


@dataclass(frozen=True)
class SaeFile:
    params: EncoderParams
    hook_name: str  # "" when the files name no hook
    format: str
    source: str
    content_hash: str
    kind: str = "sae"  # "sae" | "transcoder"
    hook_name_out: str = ""
    # SAELens metadata keys where the format has them: model_name, model_class_name,
    # model_from_pretrained_kwargs, prepend_bos, hook_head_index, neuronpedia_id; and
    # "trained_on_unscaled_embedding" (Gemma Scope embedding SAEs).
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FolderFormat:
    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path], SaeFile]


def _folder_formats() -> list[FolderFormat]:
    from sagex.activation.formats import gemmascope, saelens, sparsify

    return [saelens.FORMAT, sparsify.FORMAT, gemmascope.FORMAT]


def load_sae_file(sae_id: str, spec: SaeSource | Path | str, hf_cache: Path | None = None) -> SaeFile:
    """Read one SAE from a folder or a release id; SaeLoadError says what is wrong."""
    spec = SaeSource.of(spec)
    path = Path(spec.source).expanduser()
    try:
        if path.is_dir():
            loaded = load_folder(path)
        elif looks_like_release(spec.source):
            from sagex.activation.formats.release import load_release

            loaded = load_release(spec.source, hf_cache)
        else:
            raise SaeLoadError(f"{spec.source} is neither a folder nor a SAELens release id 'release/sae_id'")
    except SaeLoadError as exc:
        raise SaeLoadError(f"SAE {sae_id!r}: {exc}") from exc
    if spec.hook:
        # The hook changes what the SAE reads, so it is part of its identity (mining cache key).
        tag = hashlib.sha256(spec.hook.encode()).hexdigest()[:6]
        loaded = SaeFile(**{**loaded.__dict__, "hook_name": spec.hook, "content_hash": f"{loaded.content_hash}-{tag}"})
    if not loaded.hook_name:
        raise SaeLoadError(
            f"SAE {sae_id!r}: the {loaded.format} files at {spec.source} name no hook; give one "
            "(TOML: {{ source = ..., hook = \"blocks.3.hook_resid_post\" }}; CLI: --sae ID=SOURCE@HOOK)"
        )
    return loaded


def load_folder(path: Path) -> SaeFile:
    formats = _folder_formats()
    for fmt in formats:
        if fmt.detect(path):
            return fmt.load(path)
    raise SaeLoadError(
        f"{path} holds no SAE this server reads: expected cfg.json + sae_weights.safetensors (SAELens), "
        "cfg.json + sae.safetensors (sparsify, one hookpoint folder) or params.npz (Gemma Scope)"
    )


def looks_like_release(source: str) -> bool:
    release, sep, sae_id = source.partition("/")
    return bool(sep and release and sae_id) and not source.startswith((".", "~"))


FORMAT_NAMES = ("saelens", "saelens-release", "sparsify", "gemmascope")
