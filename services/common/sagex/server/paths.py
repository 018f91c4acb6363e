"""Where every service keeps what it builds and may rebuild."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of the converted model, the corpus, mined exemplars and the agent's
    database. ``SAGEX_CACHE_DIR`` overrides it."""
    root = os.environ.get("SAGEX_CACHE_DIR") or Path.home() / ".cache" / "sagex"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
