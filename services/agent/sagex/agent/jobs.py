"""Batch jobs: many features explained concurrently and durably, as operations of
the server kit's engine (sagex.server.operations).

A job is one operation whose units are its features. A feature's explanation is
committed with its unit's "done" mark, so a job that is interrupted (process
killed, server restarted) resumes exactly where it stopped, and replicas sharing
one database never run the same job twice: the engine's leases give every job one
runner, and a unit already done is never recorded again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import grpc
import structlog
from google.protobuf import timestamp_pb2, wrappers_pb2

from sagex.agent import convert
from sagex.agent.config import AgentConfig
from sagex.agent.explainer import Explainer, Outcome, RunSpec
from sagex.agent.loop import Emit
from sagex.agent.progress import LiveProgress
from sagex.agent.store import Store
from sagex.agent.validation import stored_batch_spec
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.server.operations import Commit, UnitResult
from sagex.server.opstore import OperationRow, Progress, UnitRow

log = structlog.get_logger(__name__)

RETRY_DELAYS_S = (1.0, 3.0, 9.0)  # for features that failed only because a service was unavailable


def _timestamp(seconds: float | None = None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if seconds is None:
        ts.GetCurrentTime()
    else:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def explanation_name(sae_id: str, feature_id: int) -> str:
    return f"explanations/{sae_id}/{feature_id}/{uuid.uuid4().hex[:16]}"


class FeatureRunner:
    """Explains one feature at a time for streams and jobs alike, within the server's
    limit on features in flight."""

    def __init__(self, config: AgentConfig, store: Store, explainer: Explainer) -> None:
        self.config = config
        self.store = store
        self.explainer = explainer
        self.slots = asyncio.Semaphore(config.max_concurrent_features)  # across jobs and streams
        self.live = LiveProgress()

    async def explain(self, spec: RunSpec, emit: Emit | None = None, *, in_job: bool = False) -> pb.Explanation:
        """Explain one feature. A feature that failed only because a service was
        unavailable, before spending anything, is retried a few times first (in jobs:
        a stream's consumer has already seen the failed run's events)."""
        async with self.slots:
            outcome: Outcome | None = None
            for delay in (*RETRY_DELAYS_S, None):
                outcome = await (self.explainer.explain(spec, emit) if emit else self.explainer.explain(spec))
                retry = (outcome.error_code is grpc.StatusCode.UNAVAILABLE and outcome.usage.total_tokens == 0
                         and (emit is None or in_job))
                if not retry or delay is None:
                    break
                log.warning("feature_retry", feature=spec.feature_id, error=outcome.error, delay=delay)
                await asyncio.sleep(delay)
        assert outcome is not None
        name = explanation_name(spec.sae_id, spec.feature_id)
        try:
            return convert.explanation(outcome, name, _timestamp())
        except Exception as exc:  # a bug in what a run produced: record the failure, not the run
            log.exception("explanation_unstorable", feature=spec.feature_id)
            failed = Outcome(spec, outcome.policy, None, usage=outcome.usage, elapsed=outcome.elapsed,
                             error_code=grpc.StatusCode.INTERNAL, stop_reason="internal_error",
                             error=f"internal error ({type(exc).__name__}: {exc}); please report it")
            return convert.explanation(failed, name, _timestamp())

    async def explain_and_record(self, spec: RunSpec, emit: Emit | None = None) -> pb.Explanation:
        """A stream's feature: explained, then stored."""
        explanation = await self.explain(spec, emit)
        await asyncio.to_thread(self.store.record, explanation)
        return explanation


class ExplainJob:
    """A BatchExplainFeatures request: unit p explains feature p."""

    kind: ClassVar[str] = "explain"

    def __init__(self, runner: FeatureRunner, request: pb.BatchExplainFeaturesRequest, spec: RunSpec) -> None:
        self.runner = runner
        self.request = request
        self.spec = spec
        self.plan: dict[str, Any] = {}  # the request itself says everything a resumed job needs
        self.concurrency = request.concurrency or runner.config.default_concurrency

    def items(self) -> list[int]:
        return list(range(len(self.request.feature_ids)))

    async def check(self) -> None:
        """Nothing to refuse: a resumed job's request was validated when it was submitted."""

    async def run_item(self, op_id: str, item: int, positions: Sequence[int], commit: Commit) -> None:
        feature_id = self.request.feature_ids[item]
        live = self.runner.live
        # The shared corpus scan first, shown in the job's metadata; every feature of the job
        # waits on the same one, and none of them is charged for it.
        try:
            await self.runner.explainer.warm(self.spec.sae_id, lambda p: live.mining(op_id, p))
        finally:
            live.mining(op_id, None)
        try:
            explanation = await self.runner.explain(replace(self.spec, feature_id=feature_id),
                                                    live.watch(op_id, feature_id), in_job=True)
        finally:
            live.finished(op_id, feature_id)
        await commit(positions[0], UnitResult(wrappers_pb2.StringValue(value=explanation.name),
                                              failed=explanation.HasField("error"),
                                              also=Store.recorder(explanation, op_id)))

    def response(self, units: Sequence[UnitRow]) -> pb.BatchExplainFeaturesResponse:
        """The explanations' names in feature order; "" where a feature was not done."""
        names = [wrappers_pb2.StringValue.FromString(u.result).value if u.done and u.result else "" for u in units]
        return pb.BatchExplainFeaturesResponse(explanations=names)

    def summary(self, progress: Progress) -> str:
        return f"{progress.units_done} of {progress.units} features"


class AgentJobs:
    """The engine's view of the agent's jobs: stored ones to resume, and their metadata."""

    def __init__(self, runner: FeatureRunner) -> None:
        self.runner = runner

    def new(self, request: pb.BatchExplainFeaturesRequest, spec: RunSpec) -> ExplainJob:
        return ExplainJob(self.runner, request, spec)

    def load(self, kind: str, request: bytes, plan: dict[str, Any]) -> ExplainJob:
        if kind != ExplainJob.kind:
            raise ValueError(f"the operation is of kind {kind!r}, which this server does not run")
        parsed = pb.BatchExplainFeaturesRequest.FromString(request)
        return ExplainJob(self.runner, parsed, stored_batch_spec(self.runner.config, parsed))

    def metadata(self, row: OperationRow, progress: Progress) -> pb.BatchExplainFeaturesMetadata:
        if row.kind != ExplainJob.kind:
            raise ValueError(f"unknown operation kind {row.kind!r}")
        return pb.BatchExplainFeaturesMetadata(
            total=progress.units, done=progress.units_done - progress.units_failed, failed=progress.units_failed,
            usage=self.runner.store.job_usage(row.id), create_time=_timestamp(row.create_time),
            update_time=_timestamp(row.update_time),
            running=None if row.done else self.runner.live.running(row.id),
            mining=None if row.done else self.runner.live.mining_of(row.id),
        )


__all__ = ["AgentJobs", "ExplainJob", "FeatureRunner", "explanation_name"]
