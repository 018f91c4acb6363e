"""The explainers CompareExplainers can ask, by name. Every explainer hands back one
text, capped at the same length, so all are scored on the same field (SAGE's
reference evaluator scored its own labels against a one-line baseline).

* ``single_pass``: the built-in baseline (``baseline.py``) on exemplar-split windows.
* ``sage``: the agent service's ExplainFeature (its description), when an agent
  address is configured.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from sagex.api.agent.v1 import agent_service_pb2 as agent_pb
from sagex.api.agent.v1 import agent_service_pb2_grpc as agent_grpc
from sagex.api.common.v1 import types_pb2
from sagex.llm import LLMBackend, LLMUnavailable, MalformedAnswer
from sagex.remote.activation import ActivationClient, ActivationUnavailable
from sagex.scoring.baseline import BaselineSettings, SinglePassExplainer
from sagex.server.credentials import ClientCredentials
from sagex.server.lifecycle import channel_options


class ExplainerFailed(Exception):
    """No explanation for this feature; the message says why."""


class Explainer(Protocol):
    name: str

    async def explain(self, sae_id: str, feature_id: int) -> str: ...


class SinglePass:
    name = "single_pass"

    def __init__(self, activation: ActivationClient, llm: LLMBackend, settings: BaselineSettings) -> None:
        self.activation = activation
        self.explainer = SinglePassExplainer(llm, settings)
        self.settings = settings

    async def explain(self, sae_id: str, feature_id: int) -> str:
        try:
            ex = await self.activation.exemplars(sae_id, feature_id, top_k=self.settings.top_k, bands=0, per_band=0,
                                                 non_activating=0, seed=0, split=types_pb2.CORPUS_SPLIT_EXEMPLAR)
            return (await self.explainer.explain(ex.top)).text
        except (ValueError, LLMUnavailable, MalformedAnswer, ActivationUnavailable) as e:
            raise ExplainerFailed(f"single_pass: {e}") from e
        except grpc.aio.AioRpcError as e:  # one feature's mining failed: that feature is skipped, not the job
            raise ExplainerFailed(f"single_pass: the activation service said {e.code().name}: {e.details()}") from e


class SageAgent:
    """The agent service's explanation of a feature (one ExplainFeature stream)."""

    name = "sage"

    def __init__(self, address: str, timeout_s: float, credentials: ClientCredentials | None = None) -> None:
        # Token and TLS as for the activation service: from the environment unless given.
        self.credentials = ClientCredentials.from_env() if credentials is None else credentials
        self.channel = self.credentials.channel(address, channel_options())
        self.stub = agent_grpc.AgentServiceStub(self.channel)
        self.timeout_s = timeout_s

    async def explain(self, sae_id: str, feature_id: int) -> str:
        request = agent_pb.ExplainFeatureRequest(sae_id=sae_id, feature_id=feature_id)
        explanation = None
        try:
            async for event in self.stub.ExplainFeature(request, timeout=self.timeout_s,
                                                        metadata=self.credentials.call_metadata()):
                if event.HasField("explanation"):
                    explanation = event.explanation
        except grpc.aio.AioRpcError as e:
            raise ExplainerFailed(f"sage: the agent service answered {e.code().name}: {e.details()}") from e
        if explanation is None:
            raise ExplainerFailed("sage: the agent's stream ended without an explanation")
        if explanation.HasField("error") or not explanation.description.strip():
            reason = explanation.error.message or explanation.triage_class or "empty description"
            raise ExplainerFailed(f"sage: no explanation ({reason})")
        return explanation.description

    async def close(self) -> None:
        await self.channel.close()


def capped(text: str, limit: int) -> str:
    """The same cap for every explainer."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


__all__ = ["Explainer", "ExplainerFailed", "SageAgent", "SinglePass", "capped"]
