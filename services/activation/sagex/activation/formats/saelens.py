"""SAELens folders: ``cfg.json`` + ``sae_weights.safetensors``, read by sae-lens itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sagex.activation.formats import FolderFormat, SaeFile
from sagex.activation.sae import TRANSCODER_ENCODERS, SaeLoadError, content_hash, fold


def detect(path: Path) -> bool:
    return (path / "cfg.json").is_file() and (path / "sae_weights.safetensors").is_file()


def load(path: Path, overrides: dict[str, Any] | None = None, source: str = "", fmt: str = "saelens") -> SaeFile:
    from sae_lens import SAE

    try:
        sae = SAE.load_from_disk(str(path), device="cpu", dtype="float32")
    except Exception as exc:  # sae-lens raises many types for a bad folder
        raise SaeLoadError(f"sae-lens cannot load {path}: {exc}") from exc
    cfg = json.loads((path / "cfg.json").read_text())
    # v6 keeps the LLM facts under "metadata"; pre-6.0 files have them at the top level.
    meta: dict[str, Any] = {**cfg, **(cfg.get("metadata") or {})}
    meta.pop("metadata", None)
    if "hook_point" in meta and "hook_name" not in meta:
        meta["hook_name"] = meta["hook_point"]
    if "hook_point_head_index" in meta and "hook_head_index" not in meta:
        meta["hook_head_index"] = meta["hook_point_head_index"]
    meta.update(overrides or {})
    arch = cfg.get("architecture") or sae.cfg.architecture()
    return SaeFile(
        params=fold(sae),
        hook_name=str(meta.get("hf_hook_name") or meta.get("hook_name") or ""),
        format=fmt,
        source=source or str(path),
        content_hash=content_hash([path / "cfg.json", path / "sae_weights.safetensors"], json.dumps(overrides or {})),
        kind="transcoder" if arch in TRANSCODER_ENCODERS else "sae",
        hook_name_out=str(meta.get("hf_hook_name_out") or meta.get("hook_name_out") or ""),
        meta=meta,
    )


FORMAT = FolderFormat("saelens", detect, load)
