"""The agent's activation client over real gRPC: replicas in round robin, and a
dead replica skipped without failing the call."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from sagex.remote.activation import ActivationClient, ActivationUnavailable
from tests.agent.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: connections are refused


async def test_a_dead_replica_is_skipped(server: Any) -> None:
    client = ActivationClient([dead_address(), f"127.0.0.1:{server.port}"], timeout_s=10, backoff_s=0.01)
    try:
        for _ in range(4):  # every call starts on the next replica; half start on the dead one
            traces = await client.run(SAE, 5, ["The cat sat on the mat.", "A second text."])
            assert [t.text for t in traces] == ["The cat sat on the mat.", "A second text."]
            assert all(len(t.values) == len(t.tokens) for t in traces)
    finally:
        await client.close()


async def test_no_live_replica_is_a_clear_error() -> None:
    client = ActivationClient([dead_address(), dead_address()], timeout_s=2, backoff_s=0.01)
    try:
        with pytest.raises(ActivationUnavailable, match="no activation replica answered"):
            await client.run(SAE, 5, ["hello"])
    finally:
        await client.close()
