"""Fuzz fixtures: the session's activation server, and an agent and a scoring server
on loopback ports configured as in ``scripts/fuzz.py`` (cheap budgets, an LLM
endpoint that refuses connections)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
import pytest_asyncio

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.agent.server import running_agent_server
from sagex.scoring.server import running_scoring_server
from sagex.server.lifecycle import channel_options
from tests.fuzz import servers
from tests.fuzz.targets import Facts, read_facts

SECOND_SAE = "rand-topk"  # one random SAE besides the embedded one: fewer mining indexes to build


async def _channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options())


@pytest.fixture(scope="module")
def llm_url() -> Any:
    with servers.refusing_llm_url() as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def activation_channel(server: Any) -> AsyncIterator[grpc.aio.Channel]:
    channel = await _channel(server.port)
    yield channel
    await channel.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def facts(activation_channel: grpc.aio.Channel) -> Facts:
    found = await read_facts(activation_channel, EMBEDDED_SAE_ID)
    return replace(found, saes={k: v for k, v in found.saes.items() if k in (EMBEDDED_SAE_ID, SECOND_SAE)})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def agent_server(server: Any, llm_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[int]:
    config = servers.agent_config(server.port, tmp_path_factory.mktemp("fuzz-agent") / "agent.sqlite3", llm_url)
    async with running_agent_server(config) as (running, _):
        yield running.port


@pytest_asyncio.fixture(loop_scope="session")
async def agent_channel(agent_server: int) -> AsyncIterator[grpc.aio.Channel]:
    channel = await _channel(agent_server)
    yield channel
    await channel.close()


@pytest_asyncio.fixture(loop_scope="session")
async def scoring_channel(server: Any, agent_server: int, llm_url: str,
                          tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[grpc.aio.Channel]:
    database = tmp_path_factory.mktemp("fuzz-scoring") / "scoring.sqlite3"
    async with running_scoring_server(servers.scoring_config(server.port, agent_server, llm_url, database)) as (
            running, _):
        channel = await _channel(running.port)
        yield channel
        await channel.close()
