"""Request validation: every client mistake becomes INVALID_ARGUMENT or NOT_FOUND
with one field violation per problem, each saying what to fix."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from sagex.agent.budget import Budget
from sagex.agent.config import LLM_POLICIES, POLICIES, AgentConfig
from sagex.agent.explainer import RunSpec
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.remote.activation import ActivationClient
from sagex.remote.checks import require_features
from sagex.server.errors import FieldViolation, InvalidArgument, shown

MAX_REQUEST_ID = 128


def _budget(config: AgentConfig, msg: pb.Budget, problems: list[FieldViolation]) -> Budget:
    budget = config.budget.overlay(
        max_rounds=msg.max_rounds, max_probes_per_hypothesis=msg.max_probes_per_hypothesis,
        max_llm_tokens=msg.max_llm_tokens, max_cost_usd=msg.max_cost_usd, max_seconds=msg.max_seconds,
    )
    if not (math.isfinite(msg.max_cost_usd) and math.isfinite(msg.max_seconds)) \
            or msg.max_cost_usd < 0 or msg.max_seconds < 0:
        problems.append(FieldViolation("budget", "max_cost_usd and max_seconds must be finite and >= 0 "
                                                 "(0 = server default)"))
        return config.budget
    problems += [FieldViolation(f"budget.{f}", why) for f, why in budget.problems()]
    return budget


def _spec(config: AgentConfig, sae_id: str, policy: pb.PolicySpec, budget: pb.Budget, skip_triage: bool,
          problems: list[FieldViolation]) -> RunSpec:
    """The run settings a request asks for, from the request alone."""
    name = policy.policy or config.default_policy
    if name not in POLICIES:
        problems.append(FieldViolation("policy.policy", f"{shown(name)!r} is not one of {', '.join(POLICIES)}"))
    if policy.model and name not in LLM_POLICIES:
        problems.append(FieldViolation("policy.model", "only the openai and auto policies take a model name"))
    if name in LLM_POLICIES and not (policy.model or config.llm.model):
        problems.append(FieldViolation("policy.model", "the server has no default LLM model; name one"))
    count = policy.num_hypotheses or config.num_hypotheses
    if not 3 <= count <= 8:
        problems.append(FieldViolation("policy.num_hypotheses", f"{count} is outside 3..8"))
    run_budget = _budget(config, budget, problems)
    if not sae_id:
        problems.append(FieldViolation("sae_id", "required"))
    return RunSpec(sae_id, 0, name, policy.model or (config.llm.model if name in LLM_POLICIES else ""), run_budget,
                   count, skip_triage)


async def run_spec(
    config: AgentConfig, activation: ActivationClient, sae_id: str, feature_ids: Sequence[int],
    policy: pb.PolicySpec, budget: pb.Budget, skip_triage: bool, field: str = "feature_id",
) -> RunSpec:
    """The validated run settings shared by every feature of a request (feature_id 0),
    checked against what the activation service serves."""
    problems: list[FieldViolation] = []
    spec = _spec(config, sae_id, policy, budget, skip_triage, problems)
    if problems:
        raise InvalidArgument(problems)
    await require_features(activation, sae_id, feature_ids, field)
    return spec


def stored_batch_spec(config: AgentConfig, request: pb.BatchExplainFeaturesRequest) -> RunSpec:
    """The settings of a job validated when it was submitted (resuming needs no
    activation server: it may still be starting)."""
    problems: list[FieldViolation] = []
    spec = _spec(config, request.sae_id, request.policy, request.budget, request.skip_triage, problems)
    if problems:  # the server's config changed under a stored job
        raise ValueError("; ".join(f"{v.field}: {v.description}" for v in problems))
    return spec


async def explain_request(config: AgentConfig, activation: ActivationClient,
                          request: pb.ExplainFeatureRequest) -> RunSpec:
    spec = await run_spec(config, activation, request.sae_id, [request.feature_id], request.policy, request.budget,
                          request.skip_triage)
    return replace(spec, feature_id=request.feature_id)


async def batch_request(config: AgentConfig, activation: ActivationClient,
                        request: pb.BatchExplainFeaturesRequest) -> RunSpec:
    problems = []
    ids = list(request.feature_ids)
    if not ids:
        problems.append(FieldViolation("feature_ids", "list at least one feature id"))
    elif len(ids) > config.max_features_per_job:
        problems.append(FieldViolation("feature_ids", f"{len(ids)} features; at most {config.max_features_per_job} "
                                                      "per job, split it"))
    elif len(set(ids)) != len(ids):
        dupes = sorted(f for f, n in Counter(ids).items() if n > 1)[:5]
        problems.append(FieldViolation("feature_ids", f"duplicates {dupes}; list each feature once"))
    if len(request.request_id) > MAX_REQUEST_ID or not request.request_id.isprintable():
        problems.append(FieldViolation("request_id", f"use at most {MAX_REQUEST_ID} printable characters"))
    if request.concurrency > 64:
        problems.append(FieldViolation("concurrency", f"{request.concurrency} is above 64"))
    if problems:
        raise InvalidArgument(problems)
    return await run_spec(config, activation, request.sae_id, ids, request.policy, request.budget,
                          request.skip_triage, field="feature_ids")
