"""Scoring fixtures: an activation client on the session's real activation server
(the embedded SmolLM2 + SAE), and token-level features found by measurement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.remote.activation import ActivationClient
from sagex.scoring.scorers import base as scorer_base

SAE = EMBEDDED_SAE_ID


@pytest.fixture(autouse=True)
def fresh_negotiation(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an endpoint accepts is remembered per process by URL; a later fake may
    get the same port, so each test starts clean (the backend's part: tests/conftest.py)."""
    monkeypatch.setattr(scorer_base, "_no_logprobs", set())


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def activation(server: Any) -> AsyncIterator[ActivationClient]:
    client = ActivationClient([f"127.0.0.1:{server.port}"])
    yield client
    await client.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dead_feature(session_stub: Any) -> int:
    stats = await session_stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(sae_id=SAE))
    dead = np.flatnonzero(np.frombuffer(stats.max_activation, "<f4") <= 0)
    assert len(dead), "every feature fires in the test corpus"
    return int(dead[0])
