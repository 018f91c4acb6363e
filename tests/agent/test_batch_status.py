"""The agent's activation client asks for per-batch errors and raises a failed batch's
status like a failed call's, details and retry rules included."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from sagex.remote.activation import ActivationClient
from tests.agent.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_failed_probe_batch_raises_its_status(server: Any) -> None:
    client = ActivationClient([f"127.0.0.1:{server.port}"], attempts=1)
    try:
        [trace] = await client.run(SAE, 3880, ["In the beginning"])
        assert trace.values.shape[0] >= 3
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.run(SAE, 3880, ["x" * 30_000])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "texts[0]" in (info.value.details() or "")
        status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
        assert status is not None and status.details  # the BadRequest travels too
    finally:
        await client.close()
