"""Sage and AsyncSage: one client for the SAGE services, sync or async.

    from sagex.sdk import Sage, Options

    with Sage(activation="127.0.0.1:50051", agent="127.0.0.1:50052") as sage:
        print(sage.activation.model_info())
        job = sage.agent.explain_many("smollm2-135m-l3-topk32", [3880, 2347])
        for ex in job.result():
            print(ex.feature_id, [label.name for label in ex.labels], ex.description)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import grpc

from sagex.sdk._channel import ChannelConfig, async_channel, sync_channel
from sagex.sdk.activation import Activation, AsyncActivation
from sagex.sdk.agent import Agent, AsyncAgent
from sagex.sdk.scoring import AsyncScoring, Scoring

Address = str | Sequence[str]
ENV = {"activation": ("SAGE_ACTIVATION", "127.0.0.1:50051"), "agent": ("SAGE_AGENT", "127.0.0.1:50052"),
       "scoring": ("SAGE_SCORING", "127.0.0.1:50053")}
DEFAULT = "default"  # the address from $SAGE_ACTIVATION / $SAGE_AGENT / $SAGE_SCORING, else the local port


def _address(value: Address | None, service: str) -> Address | None:
    if value != DEFAULT:
        return value
    env, local = ENV[service]
    return os.environ.get(env) or local


class _Missing:
    def __init__(self, service: str) -> None:
        self._service = service

    def __getattr__(self, name: str) -> object:
        raise ValueError(f"no {self._service} address given: pass {self._service}='host:port' to the client")


class Sage:
    """Sync client. Addresses default to $SAGE_ACTIVATION / $SAGE_AGENT / $SAGE_SCORING, else the
    local ports; None leaves a service out. Without ``config``, TLS and the token
    come from the environment (``ChannelConfig.from_env``). ``activation`` may list several
    replicas (round robin)."""

    def __init__(self, activation: Address | None = DEFAULT, agent: Address | None = DEFAULT,
                 scoring: Address | None = DEFAULT, config: ChannelConfig | None = None) -> None:
        self.config = config or ChannelConfig.from_env()
        self._channels: list[grpc.Channel] = []
        self.activation: Activation = self._open(activation, Activation, "activation")  # type: ignore[assignment]
        self.agent: Agent = self._open(agent, Agent, "agent")  # type: ignore[assignment]
        self.scoring: Scoring = self._open(scoring, Scoring, "scoring")  # type: ignore[assignment]

    def _open(self, address: Address | None, api: type, service: str) -> object:
        address = _address(address, service)
        if address is None:
            return _Missing(service)
        channel = sync_channel(address, self.config)
        self._channels.append(channel)
        return api(channel, self.config)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Sage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSage:
    """Async client with the same surface as Sage."""

    def __init__(self, activation: Address | None = DEFAULT, agent: Address | None = DEFAULT,
                 scoring: Address | None = DEFAULT, config: ChannelConfig | None = None) -> None:
        self.config = config or ChannelConfig.from_env()
        self._channels: list[grpc.aio.Channel] = []
        self.activation: AsyncActivation = self._open(activation, AsyncActivation, "activation")  # type: ignore[assignment]
        self.agent: AsyncAgent = self._open(agent, AsyncAgent, "agent")  # type: ignore[assignment]
        self.scoring: AsyncScoring = self._open(scoring, AsyncScoring, "scoring")  # type: ignore[assignment]

    def _open(self, address: Address | None, api: type, service: str) -> object:
        address = _address(address, service)
        if address is None:
            return _Missing(service)
        channel = async_channel(address, self.config)
        self._channels.append(channel)
        return api(channel, self.config)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> AsyncSage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
