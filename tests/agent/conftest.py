"""Agent fixtures: an agent server on a loopback port, talking over real gRPC to
the session's activation server (the embedded model and SAE)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.longrunning import operations_pb2_grpc

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.agent.budget import Budget
from sagex.agent.config import AgentConfig
from sagex.agent.server import AgentRuntime, running_agent_server
from sagex.api.agent.v1 import agent_service_pb2_grpc as pb_grpc
from sagex.server.lifecycle import RunningServer, ServerOptions, channel_options

SAE = EMBEDDED_SAE_ID


@pytest.fixture
def agent_config(server: Any, tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        activation=(f"127.0.0.1:{server.port}",),
        database=tmp_path / "agent.sqlite3",
        budget=Budget(max_rounds=3, max_probes_per_hypothesis=6, max_seconds=120),
        server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0),
    )


class AgentClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.agent = pb_grpc.AgentServiceStub(channel)
        self.ops = operations_pb2_grpc.OperationsStub(channel)


StartAgent = Callable[..., AbstractAsyncContextManager[tuple[RunningServer, AgentRuntime]]]


@pytest_asyncio.fixture(loop_scope="session")
async def agent(agent_config: AgentConfig) -> AsyncIterator[AgentClient]:
    async with running_agent_server(agent_config) as (running, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options()) as channel:
            yield AgentClient(channel)


def with_llm(config: AgentConfig, **llm: Any) -> AgentConfig:
    return replace(config, llm=replace(config.llm, **llm))
