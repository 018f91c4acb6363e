from __future__ import annotations

import pytest

from sagex.llm import backend


@pytest.fixture(autouse=True)
def fresh_negotiation(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an endpoint accepts is remembered per process, keyed by URL; the OS may
    hand a later fake the same port, so every test starts from a clean slate."""
    monkeypatch.setattr(backend, "_structured_mode", {})
    monkeypatch.setattr(backend, "_token_param", {})
