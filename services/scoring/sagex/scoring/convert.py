"""Plain results to API messages."""

from __future__ import annotations

from google.rpc import status_pb2

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.scoring.result import Metric, ScoreResult
from sagex.scoring.stats import Interval


def interval(ci: Interval | None) -> pb.ConfidenceInterval | None:
    return None if ci is None else pb.ConfidenceInterval(lower=ci.lower, upper=ci.upper, level=ci.level)


def metric(m: Metric) -> pb.Metric:
    """An undefined value (NaN) goes out as NaN with no interval; n still says why."""
    return pb.Metric(name=m.name, value=m.value, ci=interval(m.ci), n=m.n)


def scorer_result(result: ScoreResult) -> pb.ScorerResult:
    out = pb.ScorerResult(
        scorer=result.scorer, metrics=[metric(m) for m in result.metrics],
        llm_prompt_tokens=result.usage.prompt_tokens, llm_completion_tokens=result.usage.completion_tokens,
        llm_calls=result.usage.calls, llm_cost_usd=result.usage.cost_usd,
        details={k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in result.details.items()},
    )
    if result.error is not None:
        out.error.CopyFrom(status_pb2.Status(code=result.error.code.value[0], message=result.error.message))
    return out


__all__ = ["interval", "metric", "scorer_result"]
