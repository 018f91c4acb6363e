"""Where the embedded assets live."""

from __future__ import annotations

from pathlib import Path

from sagex.server.paths import cache_dir

# Committed with the repository: trained once by scripts/train_embedded_sae.py.
EMBEDDED_SAE_ID = "smollm2-135m-l3-topk32"
EMBEDDED_SAE_DIR = Path(__file__).resolve().parents[3] / "assets" / "saes" / EMBEDDED_SAE_ID
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"

__all__ = ["EMBEDDED_MODEL_NAME", "EMBEDDED_SAE_DIR", "EMBEDDED_SAE_ID", "cache_dir"]
