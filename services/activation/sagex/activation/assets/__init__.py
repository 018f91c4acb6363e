"""Embedded default assets that exist offline: the packaged SmolLM2 model, an
offline corpus, and the SAE committed beside this package."""

from sagex.activation.assets.paths import EMBEDDED_SAE_DIR, EMBEDDED_SAE_ID, cache_dir

__all__ = ["EMBEDDED_SAE_DIR", "EMBEDDED_SAE_ID", "cache_dir"]
