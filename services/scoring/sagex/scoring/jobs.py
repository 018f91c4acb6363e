"""The work behind the long-running RPCs: scoring a batch of explanations, and
explaining features with several explainers, then scoring every explanation of
a feature on that feature's one held-out sample and comparing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.scoring import convert
from sagex.scoring.compare import compare
from sagex.scoring.engine import ExplanationRef, ScoringEngine
from sagex.scoring.explainers import Explainer, ExplainerFailed, capped
from sagex.scoring.result import ScoreResult

log = structlog.get_logger(__name__)


async def _bounded(limit: int, calls: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """At most ``limit`` at a time; a TaskGroup, so if one fails the rest are
    cancelled instead of spending on a job that has already failed."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await call()

    try:
        async with asyncio.TaskGroup() as group:
            for call in calls:
                group.create_task(one(call))
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def score_batch(engine: ScoringEngine, request: pb.BatchScoreExplanationsRequest, scorers: Sequence[str],
                      metadata: pb.BatchScoreExplanationsMetadata) -> pb.BatchScoreExplanationsResponse:
    """Each explanation on its own feature's sample; ``failed`` counts explanations
    with at least one scorer error (their results still carry the others)."""
    metadata.total = len(request.explanations)
    results: list[pb.ScoreExplanationResponse | None] = [None] * len(request.explanations)

    async def one(i: int) -> None:
        ex = request.explanations[i]
        scored = await engine.score(ExplanationRef(ex.sae_id, ex.feature_id, ex.text), scorers, request.seed)
        results[i] = pb.ScoreExplanationResponse(explanation=ex, results=[convert.scorer_result(r) for r in scored])
        metadata.done += 1
        metadata.failed += any(r.error is not None for r in scored)

    await _bounded(engine.config.batch_concurrency, [lambda i=i: one(i) for i in range(len(results))])
    return pb.BatchScoreExplanationsResponse(results=[r for r in results if r is not None])


async def compare_explainers(engine: ScoringEngine, explainers: Mapping[str, Explainer],
                             request: pb.CompareExplainersRequest, scorers: Sequence[str],
                             metadata: pb.CompareExplainersMetadata) -> pb.CompareExplainersResponse:
    metadata.total = len(request.feature_ids)
    limit = engine.config.max_explanation_chars
    outcomes: dict[str, dict[int, Sequence[ScoreResult] | str]] = {name: {} for name in request.explainers}

    async def feature(feature_id: int) -> None:
        data = engine.feature_data(request.sae_id, feature_id, request.seed)  # one sample for every explainer

        async def explainer(name: str) -> None:
            try:
                text = capped(await explainers[name].explain(request.sae_id, feature_id), limit)
            except ExplainerFailed as e:
                outcomes[name][feature_id] = str(e)
                return
            outcomes[name][feature_id] = await engine.score(
                ExplanationRef(request.sae_id, feature_id, text), scorers, request.seed, data)

        await asyncio.gather(*(explainer(n) for n in request.explainers))
        metadata.done += 1

    await _bounded(engine.config.batch_concurrency, [lambda f=f: feature(f) for f in request.feature_ids])
    result = compare(outcomes, request.seed)
    for s in result.skipped:
        log.info("compare_skipped", explainer=s.explainer, feature=s.feature_id, scorer=s.scorer, reason=s.reason)
    return pb.CompareExplainersResponse(
        summaries=[pb.ExplainerSummary(explainer=name, metrics=[convert.metric(m) for m in metrics])
                   for name, metrics in result.summaries.items()],
        differences=[
            pb.PairedDifference(
                metric=key, explainer_a=a, explainer_b=b, wins=d.wins, ties=d.ties, losses=d.losses,
                difference=pb.Metric(name=key, value=d.mean_difference, ci=convert.interval(d.ci), n=d.n),
                p_value=d.p_value,
            )
            for key, a, b, d in result.differences
        ],
        skipped=[pb.SkippedFeature(explainer=s.explainer, feature_id=s.feature_id, scorer=s.scorer, reason=s.reason)
                 for s in result.skipped],
    )


__all__ = ["compare_explainers", "score_batch"]
