"""Assembly of the scoring server: activation client, LLM, embedder, scorers,
explainers, the operations store and its jobs, servicers. Operations a previous
process left unfinished are resumed before the server serves."""

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
from sagex.scoring.jobs import ScoringJobs
from sagex.scoring.servicer import ScoringServicer
from sagex.server.lifecycle import RunningServer, Service, running_services, serve_until_signal
from sagex.server.operations import Operations
from sagex.server.opservicer import OperationsServicer
from sagex.server.opstore import OperationStore

SERVICE_NAME = scoring_service_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name
OPERATIONS_NAME = "google.longrunning.Operations"


@dataclass
class ScoringRuntime:
    config: ScoringConfig
    activation: ActivationClient
    llm: LLMBackend
    engine: ScoringEngine
    explainers: dict[str, Explainer]
    store: OperationStore
    jobs: ScoringJobs
    operations: Operations

    async def start(self) -> None:
        """Resume what a previous process left running (before serving, so a
        resubmitted request finds its operation instead of starting a second one)."""
        await self.operations.start()

    async def close(self) -> None:
        await self.operations.close()
        self.store.close()
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
    store = OperationStore(config.database_path())
    jobs = ScoringJobs(engine, explainers)
    operations = Operations(store, jobs, concurrency=config.batch_concurrency,
                            retention_s=config.retention_hours * 3600)
    return ScoringRuntime(config, activation, llm, engine, explainers, store, jobs, operations)


def services(rt: ScoringRuntime) -> list[Service]:
    scoring = ScoringServicer(rt.engine, rt.explainers, rt.operations, rt.jobs)
    ops = OperationsServicer(rt.operations, "retention_hours in [scoring]")
    return [
        Service(SERVICE_NAME,
                lambda server: scoring_service_pb2_grpc.add_ScoringServiceServicer_to_server(scoring, server)),
        Service(OPERATIONS_NAME, lambda server: operations_pb2_grpc.add_OperationsServicer_to_server(ops, server)),
    ]


@asynccontextmanager
async def running_scoring_server(config: ScoringConfig) -> AsyncIterator[tuple[RunningServer, ScoringRuntime]]:
    """Start a server on ``config.server`` (port 0 picks one), ready and with
    unfinished operations resumed when yielded."""
    rt = build_runtime(config)
    try:
        await rt.start()
        async with running_services(services(rt), config.server) as running:
            yield running, rt
    finally:
        await rt.close()


async def serve(config: ScoringConfig) -> None:
    """Run the scoring server until SIGTERM/SIGINT; a restart resumes its operations."""
    rt = build_runtime(config)
    try:
        await rt.start()
        await serve_until_signal(services(rt), config.server)
    finally:
        await rt.close()


__all__ = ["SERVICE_NAME", "ScoringRuntime", "build_runtime", "running_scoring_server", "serve"]
