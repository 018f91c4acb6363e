"""Assembly of the scoring server: activation client, LLM, embedder, scorers,
explainers, operations, servicers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from google.longrunning import operations_pb2_grpc

from sagex.api.scoring.v1 import scoring_service_pb2, scoring_service_pb2_grpc
from sagex.llm import LLMBackend
from sagex.remote.activation import ActivationClient
from sagex.scoring.config import ScoringConfig
from sagex.scoring.embedder import MiniLMEmbedder
from sagex.scoring.engine import ScoringEngine
from sagex.scoring.explainers import Explainer, SageAgent, SinglePass
from sagex.scoring.operations import Operations
from sagex.scoring.servicer import OperationsServicer, ScoringServicer
from sagex.server.lifecycle import RunningServer, Service, running_services, serve_until_signal

SERVICE_NAME = scoring_service_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name
OPERATIONS_NAME = "google.longrunning.Operations"


@dataclass
class ScoringRuntime:
    config: ScoringConfig
    activation: ActivationClient
    llm: LLMBackend
    engine: ScoringEngine
    explainers: dict[str, Explainer]
    operations: Operations

    async def close(self) -> None:
        await self.operations.close()
        for explainer in self.explainers.values():
            if isinstance(explainer, SageAgent):
                await explainer.close()
        await self.activation.close()
        await self.llm.aclose()


def build_runtime(config: ScoringConfig) -> ScoringRuntime:
    activation = ActivationClient(config.activation, config.activation_timeout_s, config.mining_timeout_s)
    llm = LLMBackend(config.llm, config_section="[scoring.llm]")
    engine = ScoringEngine(config, activation, llm, MiniLMEmbedder(config.embedding_device))
    explainers: dict[str, Explainer] = {}
    if config.llm.model:
        explainers["single_pass"] = SinglePass(activation, llm, config.baseline)
    if config.agent:
        explainers["sage"] = SageAgent(config.agent, config.agent_timeout_s)
    return ScoringRuntime(config, activation, llm, engine, explainers, Operations())


def services(rt: ScoringRuntime) -> list[Service]:
    scoring = ScoringServicer(rt.engine, rt.explainers, rt.operations)
    ops = OperationsServicer(rt.operations)
    return [
        Service(SERVICE_NAME,
                lambda server: scoring_service_pb2_grpc.add_ScoringServiceServicer_to_server(scoring, server)),
        Service(OPERATIONS_NAME, lambda server: operations_pb2_grpc.add_OperationsServicer_to_server(ops, server)),
    ]


@asynccontextmanager
async def running_scoring_server(config: ScoringConfig) -> AsyncIterator[tuple[RunningServer, ScoringRuntime]]:
    """Start a server on ``config.server`` (port 0 picks one), ready when yielded."""
    rt = build_runtime(config)
    async with running_services(services(rt), config.server, on_stop=rt.close) as running:
        yield running, rt


async def serve(config: ScoringConfig) -> None:
    """Run the scoring server until SIGTERM/SIGINT."""
    rt = build_runtime(config)
    await serve_until_signal(services(rt), config.server, on_stop=rt.close)


__all__ = ["SERVICE_NAME", "ScoringRuntime", "build_runtime", "running_scoring_server", "serve"]
