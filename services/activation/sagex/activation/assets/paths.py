"""Where the embedded assets live."""

from __future__ import annotations

import os
from pathlib import Path

# Committed with the repository: trained once by scripts/train_embedded_sae.py.
EMBEDDED_SAE_ID = "smollm2-135m-l3-topk32"
EMBEDDED_SAE_DIR = Path(__file__).resolve().parents[3] / "assets" / "saes" / EMBEDDED_SAE_ID
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """Root of everything the project builds and may rebuild: the converted model,
    the corpus and mined exemplars. ``SAGEX_CACHE_DIR`` overrides it."""
    root = os.environ.get("SAGEX_CACHE_DIR") or Path.home() / ".cache" / "sagex"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
