"""The work behind the long-running RPCs, as jobs that ``operations`` runs unit by
unit and stores as it goes:

* ``BatchScoring``: one unit per explanation, scored on its own feature's sample.
* ``CompareJob``: one unit per (feature, explainer): the explainer explains the
  feature, then the explanation is scored on that feature's one held-out sample
  (shared by the feature's units); the comparison is computed from the stored
  units when all are done.

A job's *plan* is what its request was resolved to when it was accepted: the
scorers, the settings its numbers depend on (held-out sample, scorer settings,
the scoring LLM's model) and the SAEs' shapes. A resumed job is checked against
the server it resumes on: an explainer that is no longer configured, changed
settings, or an SAE that is gone or changed stop it (CannotResume) instead of
mixing results of two setups in one response.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import grpc
import structlog
from google.protobuf.message import Message

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.remote.activation import ActivationUnavailable
from sagex.scoring import convert
from sagex.scoring.compare import compare
from sagex.scoring.engine import ExplanationRef, ScoringEngine
from sagex.scoring.explainers import Explainer, ExplainerFailed, capped
from sagex.scoring.heldout import FeatureData
from sagex.scoring.result import ScorerOutcome
from sagex.server.operations import CannotResume, Commit, Job, UnitResult
from sagex.server.opstore import OperationRow, Progress, UnitRow

log = structlog.get_logger(__name__)


async def _sae_plan(engine: ScoringEngine, sae_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The shape of each SAE as the activation service describes it now (validated already)."""
    plan = {}
    for sae_id in sorted(set(sae_ids)):
        sae = await engine.activation.sae(sae_id)
        if sae is not None:
            plan[sae_id] = {"d_sae": sae.d_sae, "hook_name": sae.hook_name}
    return plan


async def _check_saes(engine: ScoringEngine, planned: Mapping[str, Mapping[str, Any]]) -> None:
    """CannotResume when an SAE the job was accepted for is gone or has another shape.
    An activation service that cannot be asked stops nothing: the units then say so
    in their results, as they would for a job that never stopped."""
    for sae_id, shape in planned.items():
        try:
            sae = await engine.activation.sae(sae_id)
        except (ActivationUnavailable, grpc.aio.AioRpcError) as exc:
            log.warning("resume_check_skipped", sae=sae_id, reason=str(exc))
            return
        if sae is None:
            raise CannotResume(f"saes/{sae_id}", f"the activation service no longer serves SAE {sae_id!r}")
        now = {"d_sae": sae.d_sae, "hook_name": sae.hook_name}
        if now != dict(shape):
            raise CannotResume(f"saes/{sae_id}", f"SAE {sae_id!r} changed since the operation started "
                                                 f"(was {dict(shape)}, now {now}); its scores would not compare")


def _settings(engine: ScoringEngine, scorers: Sequence[str], baseline: bool = False) -> dict[str, Any]:
    """The settings the job's numbers depend on, as JSON values."""
    config = engine.config
    out: dict[str, Any] = {"llm.model": config.llm.model, "heldout": asdict(config.heldout),
                           "max_explanation_chars": config.max_explanation_chars}
    out.update({name: asdict(config.settings_of(name)) for name in scorers})
    if baseline:
        out["baseline"] = asdict(config.baseline)
    return json.loads(json.dumps(out))


def _check_plan(engine: ScoringEngine, plan: Mapping[str, Any], baseline: bool = False) -> None:
    gone = [n for n in plan["scorers"] if n not in engine.scorers]
    if gone:
        raise CannotResume(f"scorers/{gone[0]}", f"this server has no scorer {gone[0]!r}")
    then, now = plan["settings"], _settings(engine, plan["scorers"], baseline)
    changed = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
    if changed:
        described = "; ".join(f"{k}: {then.get(k)} -> {now.get(k)}" for k in changed)
        raise CannotResume(f"settings/{changed[0]}", "the scoring settings changed since the operation started "
                                                     f"({described}); its scores would not compare")


class BatchScoring:
    kind: ClassVar[str] = "batch_score"
    concurrency: ClassVar[int] = 0  # the server's batch_concurrency

    def __init__(self, engine: ScoringEngine, request: pb.BatchScoreExplanationsRequest, plan: dict[str, Any]) -> None:
        self.engine = engine
        self.request = request
        self.plan = plan

    @classmethod
    async def new(cls, engine: ScoringEngine, request: pb.BatchScoreExplanationsRequest,
                  scorers: Sequence[str]) -> BatchScoring:
        saes = await _sae_plan(engine, [ex.sae_id for ex in request.explanations])
        return cls(engine, request, {"scorers": list(scorers), "settings": _settings(engine, scorers), "saes": saes})

    @staticmethod
    def metadata(progress: Progress) -> pb.BatchScoreExplanationsMetadata:
        """``failed`` counts explanations with at least one scorer error (their results
        still carry the others)."""
        return pb.BatchScoreExplanationsMetadata(total=progress.units, done=progress.units_done,
                                                 failed=progress.units_failed)

    def items(self) -> list[int]:
        return list(range(len(self.request.explanations)))

    def summary(self, progress: Progress) -> str:
        return f"{progress.units_done} of {progress.units} explanations"

    async def check(self) -> None:
        _check_plan(self.engine, self.plan)
        await _check_saes(self.engine, self.plan["saes"])

    async def run_item(self, op_id: str, item: int, positions: Sequence[int], commit: Commit) -> None:
        ex = self.request.explanations[item]
        scored = await self.engine.score(ExplanationRef(ex.sae_id, ex.feature_id, ex.text), self.plan["scorers"],
                                         self.request.seed)
        result = pb.ScoreExplanationResponse(explanation=ex, results=[convert.scorer_result(r) for r in scored])
        await commit(positions[0], UnitResult(result, failed=any(r.error is not None for r in scored)))

    def response(self, units: Sequence[UnitRow]) -> pb.BatchScoreExplanationsResponse:
        return pb.BatchScoreExplanationsResponse(
            results=[pb.ScoreExplanationResponse.FromString(u.result) for u in units if u.done and u.result])


class CompareJob:
    kind: ClassVar[str] = "compare"
    concurrency: ClassVar[int] = 0

    def __init__(self, engine: ScoringEngine, explainers: Mapping[str, Explainer],
                 request: pb.CompareExplainersRequest, plan: dict[str, Any]) -> None:
        self.engine = engine
        self.explainers = explainers
        self.request = request
        self.plan = plan
        self.names = list(request.explainers)

    @classmethod
    async def new(cls, engine: ScoringEngine, explainers: Mapping[str, Explainer],
                  request: pb.CompareExplainersRequest, scorers: Sequence[str]) -> CompareJob:
        saes = await _sae_plan(engine, [request.sae_id])
        settings = _settings(engine, scorers, baseline="single_pass" in request.explainers)
        return cls(engine, explainers, request, {"scorers": list(scorers), "settings": settings, "saes": saes})

    @staticmethod
    def metadata(progress: Progress) -> pb.CompareExplainersMetadata:
        """``done`` counts features every explainer is finished with."""
        return pb.CompareExplainersMetadata(total=progress.items, done=progress.items_done)

    def items(self) -> list[int]:
        """Unit p is feature p // E with explainer p % E (E explainers)."""
        return [i for i in range(len(self.request.feature_ids)) for _ in self.names]

    def summary(self, progress: Progress) -> str:
        return f"{progress.items_done} of {progress.items} features"

    def _explainer(self, position: int) -> str:
        return self.names[position % len(self.names)]

    async def check(self) -> None:
        missing = [name for name in self.names if name not in self.explainers]
        if missing:
            hint = " (it needs agent = host:port in [scoring])" if missing[0] == "sage" else \
                " (it needs an LLM: model in [scoring.llm])"
            raise CannotResume(f"explainers/{missing[0]}",
                               f"explainer {missing[0]!r} is not available on this server{hint}")
        _check_plan(self.engine, self.plan, baseline="single_pass" in self.names)
        await _check_saes(self.engine, self.plan["saes"])

    async def run_item(self, op_id: str, item: int, positions: Sequence[int], commit: Commit) -> None:
        r = self.request
        feature_id = r.feature_ids[item]
        data = self.engine.feature_data(r.sae_id, feature_id, r.seed)  # one sample for every explainer
        await asyncio.gather(*(self._one(feature_id, position, data, commit) for position in positions))

    async def _one(self, feature_id: int, position: int, data: FeatureData, commit: Commit) -> None:
        r = self.request
        name = self._explainer(position)
        try:
            text = capped(await self.explainers[name].explain(r.sae_id, feature_id),
                          self.engine.config.max_explanation_chars)
        except ExplainerFailed as e:
            await commit(position, UnitResult(None, failed=True, note=str(e)))
            return
        scored = await self.engine.score(ExplanationRef(r.sae_id, feature_id, text), self.plan["scorers"], r.seed,
                                         data)
        await commit(position, UnitResult(pb.ScoreExplanationResponse(
            explanation=pb.ExplanationToScore(sae_id=r.sae_id, feature_id=feature_id, text=text),
            results=[convert.scorer_result(s) for s in scored])))

    def response(self, units: Sequence[UnitRow]) -> pb.CompareExplainersResponse:
        outcomes: dict[str, dict[int, Sequence[ScorerOutcome] | str]] = {name: {} for name in self.names}
        for unit in units:
            if not unit.done:
                continue
            feature_id = self.request.feature_ids[unit.item]
            outcomes[self._explainer(unit.position)][feature_id] = (
                unit.note if unit.result is None else
                [convert.score_result(s) for s in pb.ScoreExplanationResponse.FromString(unit.result).results])
        result = compare(outcomes, self.request.seed)
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
            skipped=[pb.SkippedFeature(explainer=s.explainer, feature_id=s.feature_id, scorer=s.scorer,
                                       reason=s.reason) for s in result.skipped],
        )


class ScoringJobs:
    """The jobs of this server: new ones from validated requests, stored ones to resume."""

    KINDS: ClassVar[dict[str, Any]] = {BatchScoring.kind: BatchScoring, CompareJob.kind: CompareJob}

    def __init__(self, engine: ScoringEngine, explainers: Mapping[str, Explainer]) -> None:
        self.engine = engine
        self.explainers = explainers

    async def batch(self, request: pb.BatchScoreExplanationsRequest, scorers: Sequence[str]) -> BatchScoring:
        return await BatchScoring.new(self.engine, request, scorers)

    async def compare(self, request: pb.CompareExplainersRequest, scorers: Sequence[str]) -> CompareJob:
        return await CompareJob.new(self.engine, self.explainers, request, scorers)

    def load(self, kind: str, request: bytes, plan: dict[str, Any]) -> Job:
        if kind == BatchScoring.kind:
            return BatchScoring(self.engine, pb.BatchScoreExplanationsRequest.FromString(request), plan)
        if kind == CompareJob.kind:
            return CompareJob(self.engine, self.explainers, pb.CompareExplainersRequest.FromString(request), plan)
        raise ValueError(f"the operation is of kind {kind!r}, which this server does not run")

    def metadata(self, row: OperationRow, progress: Progress) -> Message:
        if row.kind not in self.KINDS:
            raise ValueError(f"unknown operation kind {row.kind!r}")
        return self.KINDS[row.kind].metadata(progress)


__all__ = ["BatchScoring", "CompareJob", "ScoringJobs"]
