"""Plain results to API messages, and back (stored results of resumed operations)."""

from __future__ import annotations

import grpc
from google.rpc import status_pb2

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.llm import Usage
from sagex.scoring.result import Metric, ScorerError, ScorerOutcome
from sagex.scoring.stats import Interval

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def interval(ci: Interval | None) -> pb.ConfidenceInterval | None:
    return None if ci is None else pb.ConfidenceInterval(lower=ci.lower, upper=ci.upper, level=ci.level)


def metric(m: Metric) -> pb.Metric:
    """An undefined value (NaN) goes out as NaN with no interval; n still says why."""
    return pb.Metric(name=m.name, value=m.value, ci=interval(m.ci), n=m.n)


def scorer_result(result: ScorerOutcome) -> pb.ScorerResult:
    out = pb.ScorerResult(
        scorer=result.scorer, metrics=[metric(m) for m in result.metrics],
        llm_prompt_tokens=result.usage.prompt_tokens, llm_completion_tokens=result.usage.completion_tokens,
        llm_calls=result.usage.calls, llm_cost_usd=result.usage.cost_usd,
        details={k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in result.details.items()},
    )
    if result.error is not None:
        out.error.CopyFrom(status_pb2.Status(code=result.error.code.value[0], message=result.error.message))
    return out


def score_result(message: pb.ScorerResult) -> ScorerOutcome:
    """The inverse of ``scorer_result`` for everything but ``details``, which come
    back as the strings that were sent."""
    metrics = tuple(
        Metric(m.name, m.value, Interval(m.ci.lower, m.ci.upper, m.ci.level) if m.HasField("ci") else None, m.n)
        for m in message.metrics)
    error = (ScorerError(_CODES.get(message.error.code, grpc.StatusCode.UNKNOWN), message.error.message)
             if message.HasField("error") else None)
    usage = Usage(prompt_tokens=message.llm_prompt_tokens, completion_tokens=message.llm_completion_tokens,
                  cost_usd=message.llm_cost_usd, calls=message.llm_calls)
    return ScorerOutcome(message.scorer, metrics, error, usage, dict(message.details))


__all__ = ["interval", "metric", "score_result", "scorer_result"]
