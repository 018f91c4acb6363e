"""Request validation: every client mistake becomes INVALID_ARGUMENT or NOT_FOUND
with one field violation per problem, each saying what to fix."""

from __future__ import annotations

from collections.abc import Sequence

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.remote.activation import ActivationClient
from sagex.remote.checks import require_features
from sagex.scoring.config import EXPLAINERS, SCORERS, ScoringConfig
from sagex.server.errors import FieldViolation, InvalidArgument, shown

MAX_REQUEST_ID = 128


def scorers(config: ScoringConfig, names: Sequence[str], problems: list[FieldViolation]) -> list[str]:
    chosen = list(names) or list(config.default_scorers)
    unknown = [n for n in chosen if n not in SCORERS]
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        named = ", ".join(repr(shown(u)) for u in unknown[:5]) + more
        problems.append(FieldViolation("scorers", f"unknown {named}; choose from {', '.join(SCORERS)}"))
    if len(set(chosen)) != len(chosen):
        problems.append(FieldViolation("scorers", "name each scorer once"))
    return chosen


def explanation_fields(config: ScoringConfig, ex: pb.ExplanationToScore, field: str) -> list[FieldViolation]:
    problems = []
    if not ex.sae_id:
        problems.append(FieldViolation(f"{field}.sae_id", "required"))
    if not ex.text.strip():
        problems.append(FieldViolation(f"{field}.text", "required: the explanation to score"))
    elif len(ex.text) > config.max_explanation_chars:
        problems.append(FieldViolation(f"{field}.text", f"{len(ex.text)} characters; every explainer is scored "
                                                        f"under the same cap of {config.max_explanation_chars}"))
    return problems


async def feature_ids(activation: ActivationClient, sae_id: str, ids: Sequence[int], field: str) -> None:
    """NOT_FOUND for an SAE the activation service does not serve; INVALID_ARGUMENT
    for feature ids out of its range."""
    await require_features(activation, sae_id, ids, field)


def request_id(value: str, problems: list[FieldViolation]) -> None:
    if len(value) > MAX_REQUEST_ID or not value.isprintable():
        problems.append(FieldViolation("request_id", f"use at most {MAX_REQUEST_ID} printable characters"))


async def score_request(config: ScoringConfig, activation: ActivationClient,
                        request: pb.ScoreExplanationRequest) -> list[str]:
    problems: list[FieldViolation] = []
    names = scorers(config, request.scorers, problems)
    problems += explanation_fields(config, request.explanation, "explanation")
    if problems:
        raise InvalidArgument(problems)
    await feature_ids(activation, request.explanation.sae_id, [request.explanation.feature_id],
                      "explanation.feature_id")
    return names


async def batch_request(config: ScoringConfig, activation: ActivationClient,
                        request: pb.BatchScoreExplanationsRequest) -> list[str]:
    problems: list[FieldViolation] = []
    names = scorers(config, request.scorers, problems)
    request_id(request.request_id, problems)
    if not request.explanations:
        problems.append(FieldViolation("explanations", "list at least one explanation"))
    elif len(request.explanations) > config.max_batch:
        problems.append(FieldViolation("explanations", f"{len(request.explanations)}; at most {config.max_batch} "
                                                       "per request, split it"))
    for i, ex in enumerate(request.explanations):
        problems += explanation_fields(config, ex, f"explanations[{i}]")
    if problems:
        raise InvalidArgument(problems)
    by_sae: dict[str, list[int]] = {}
    for ex in request.explanations:
        by_sae.setdefault(ex.sae_id, []).append(ex.feature_id)
    for sae_id, ids in by_sae.items():
        await feature_ids(activation, sae_id, ids, "explanations.feature_id")
    return names


async def compare_request(config: ScoringConfig, activation: ActivationClient, available: Sequence[str],
                          request: pb.CompareExplainersRequest) -> list[str]:
    problems: list[FieldViolation] = []
    names = scorers(config, request.scorers, problems)
    request_id(request.request_id, problems)
    if not request.sae_id:
        problems.append(FieldViolation("sae_id", "required"))
    ids = list(request.feature_ids)
    if not ids:
        problems.append(FieldViolation("feature_ids", "list at least one feature id"))
    elif len(ids) > config.max_batch:
        problems.append(FieldViolation("feature_ids", f"{len(ids)}; at most {config.max_batch} per request"))
    elif len(set(ids)) != len(ids):
        problems.append(FieldViolation("feature_ids", "list each feature once"))
    explainers = list(request.explainers)
    if len(explainers) < 2 or len(set(explainers)) != len(explainers):
        problems.append(FieldViolation("explainers", "name at least two distinct explainers to compare"))
    for name in explainers:
        if name not in EXPLAINERS:
            problems.append(FieldViolation("explainers",
                                           f"unknown {shown(name)!r}; choose from {', '.join(EXPLAINERS)}"))
        elif name not in available:
            problems.append(FieldViolation("explainers", f"{name!r} is not available on this server (the 'sage' "
                                                         "explainer needs agent = host:port in [scoring])"))
    if problems:
        raise InvalidArgument(problems)
    await feature_ids(activation, request.sae_id, ids, "feature_ids")
    return names


__all__ = ["batch_request", "compare_request", "score_request"]
