"""Assembly of the agent server: activation client, store, policies, jobs, servicers."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from google.longrunning import operations_pb2_grpc

from sagex.agent.config import AgentConfig
from sagex.agent.explainer import Explainer, RunSpec
from sagex.agent.jobs import AgentJobs, FeatureRunner
from sagex.agent.policies.base import Policy
from sagex.agent.policies.heuristic import HeuristicPolicy
from sagex.agent.policies.llm import LLMPolicy
from sagex.agent.policies.symbolic import SymbolicPolicy
from sagex.agent.servicer import AgentServicer
from sagex.agent.store import Store
from sagex.agent.symbolic import resources
from sagex.api.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from sagex.llm.backend import LLMBackend
from sagex.remote.activation import ActivationClient
from sagex.server.lifecycle import RunningServer, Service, running_services, serve_until_signal
from sagex.server.operations import Operations
from sagex.server.opservicer import OperationsServicer
from sagex.server.paths import cache_dir

log = structlog.get_logger(__name__)
SERVICE_NAME = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
OPERATIONS_NAME = "google.longrunning.Operations"


@dataclass
class AgentRuntime:
    config: AgentConfig
    activation: ActivationClient
    store: Store
    llm: LLMBackend
    runner: FeatureRunner
    jobs: AgentJobs
    operations: Operations

    async def start(self) -> None:
        """Resume the jobs a previous process (or a replica that died) left running:
        before serving, so a job submitted now cannot be started twice."""
        await self.operations.start()

    async def close(self) -> None:
        await self.operations.close()
        await self.activation.close()
        await self.llm.aclose()
        self.store.close()


def _warm_symbolic() -> None:
    """Load the tagger and WordNet in the background, so the first feature does not
    wait for them; a missing one is logged at start with how to install it."""
    try:
        resources.check()
    except resources.ResourceMissing as exc:
        log.warning("symbolic_resources_missing", error=str(exc))


def build_runtime(config: AgentConfig) -> AgentRuntime:
    threading.Thread(target=_warm_symbolic, name="symbolic-warmup", daemon=True).start()
    activation = ActivationClient(config.activation, config.activation_timeout_s, config.mining_timeout_s)
    store = Store(config.database or cache_dir() / "agent" / "agent.sqlite3")
    llm = LLMBackend(config.llm)

    def make_policy(spec: RunSpec) -> Policy:
        if spec.policy == "openai":
            return LLMPolicy(llm, spec.model or config.llm.model, spec.budget)
        if spec.policy in ("symbolic", "auto"):  # auto: symbolic first (the explainer routes on)
            return SymbolicPolicy()
        return HeuristicPolicy()

    runner = FeatureRunner(config, store, Explainer(config, activation, make_policy))
    jobs = AgentJobs(runner)
    operations = Operations(store.ops, jobs, concurrency=config.default_concurrency,
                            retention_s=config.retention_hours * 3600)
    return AgentRuntime(config, activation, store, llm, runner, jobs, operations)


def services(rt: AgentRuntime) -> list[Service]:
    agent = AgentServicer(rt.config, rt.activation, rt.store, rt.runner, rt.jobs, rt.operations)
    ops = OperationsServicer(rt.operations, "retention_hours in [agent]")
    return [
        Service(SERVICE_NAME, lambda server: agent_service_pb2_grpc.add_AgentServiceServicer_to_server(agent, server)),
        Service(OPERATIONS_NAME, lambda server: operations_pb2_grpc.add_OperationsServicer_to_server(ops, server)),
    ]


@asynccontextmanager
async def running_agent_server(config: AgentConfig) -> AsyncIterator[tuple[RunningServer, AgentRuntime]]:
    """Start a server on ``config.server`` (port 0 picks one), ready and with
    unfinished jobs resumed when yielded."""
    rt = build_runtime(config)
    await rt.start()
    async with running_services(services(rt), config.server, on_stop=rt.close) as running:
        yield running, rt


async def serve(config: AgentConfig) -> None:
    """Run the agent server until SIGTERM/SIGINT; a restart resumes its jobs."""
    rt = build_runtime(config)
    await rt.start()
    await serve_until_signal(services(rt), config.server, on_stop=rt.close)


__all__ = ["SERVICE_NAME", "AgentRuntime", "build_runtime", "running_agent_server", "serve"]
