"""Batch jobs: many features explained concurrently and durably.

A job is created in one transaction with all its features pending. Each
feature's explanation is committed together with its "done" mark, so a job
that is interrupted (process killed, server restarted) resumes exactly where it
stopped: no feature lost, none explained twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

import grpc
import structlog
from google.longrunning import operations_pb2
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, status_pb2

from sagex.agent import convert
from sagex.agent.config import AgentConfig
from sagex.agent.explainer import Explainer, Outcome, RunSpec
from sagex.agent.loop import Emit
from sagex.agent.progress import LiveProgress
from sagex.agent.store import JobRow, Store
from sagex.agent.validation import stored_batch_spec
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.api.common.v1 import types_pb2

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


def operation(row: JobRow, running: list[pb.FeatureProgress] | None = None,
              mining: types_pb2.MiningProgress | None = None) -> operations_pb2.Operation:
    op = operations_pb2.Operation(name=f"operations/{row.id}")
    op.metadata.Pack(pb.BatchExplainFeaturesMetadata(
        total=row.total, done=row.done, failed=row.failed, usage=row.usage,
        create_time=_timestamp(row.create_time), update_time=_timestamp(row.update_time),
        running=running if row.state == "RUNNING" else None,
        mining=mining if row.state == "RUNNING" else None,
    ))
    if row.state == "RUNNING":
        return op
    op.done = True
    if row.state == "SUCCEEDED":
        op.response.Pack(pb.BatchExplainFeaturesResponse(explanations=row.explanations))
    elif row.state == "CANCELLED":
        op.error.CopyFrom(status_pb2.Status(code=code_pb2.CANCELLED, message="the job was cancelled; "
                                            f"{row.done + row.failed} of {row.total} features were finished"))
    else:
        op.error.CopyFrom(status_pb2.Status(code=code_pb2.ABORTED, message=row.error_message))
    return op


class JobManager:
    def __init__(self, config: AgentConfig, store: Store, explainer: Explainer) -> None:
        self.config = config
        self.store = store
        self.explainer = explainer
        self.slots = asyncio.Semaphore(config.max_concurrent_features)  # across jobs and streams
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Condition] = {}
        self.live = LiveProgress()

    async def resume(self) -> int:
        """Restart every job a previous process left running."""
        jobs = await asyncio.to_thread(self.store.running_jobs)
        for job_id in jobs:
            row = await asyncio.to_thread(self.store.job, job_id)
            if row is not None:
                log.info("job_resumed", job=job_id, remaining=row.total - row.done - row.failed)
                self._spawn(job_id, row.request)
        return len(jobs)

    async def close(self) -> None:
        """Stop running jobs without marking them: a restart resumes them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def submit(self, request: pb.BatchExplainFeaturesRequest, spec: RunSpec) -> operations_pb2.Operation:
        job_id, created = await asyncio.to_thread(self.store.create_job, uuid.uuid4().hex, request)
        if created:
            log.info("job_created", job=job_id, features=len(request.feature_ids), sae_id=request.sae_id)
            self._spawn(job_id, request, spec)
        return await self.operation(job_id)

    async def operation(self, job_id: str) -> operations_pb2.Operation:
        """Raises KeyError for an unknown (or just deleted) job."""
        row = await asyncio.to_thread(self.store.job, job_id)
        if row is None:
            raise KeyError(job_id)
        return operation(row, self.live.running(job_id), self.live.mining_of(job_id))

    async def cancel(self, job_id: str) -> bool:
        row = await asyncio.to_thread(self.store.job, job_id)
        if row is None:
            return False
        # Recorded first: if this call is interrupted, a restart must not resume the job.
        await asyncio.to_thread(self.store.finish_job, job_id, "CANCELLED")
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._notify(job_id)
        return True

    async def wait(self, job_id: str, timeout: float) -> operations_pb2.Operation:
        """The operation once done, or as it stands after ``timeout`` seconds."""
        cond = self._changed.setdefault(job_id, asyncio.Condition())
        deadline = time.monotonic() + timeout
        async with cond:
            while True:
                op = await self.operation(job_id)
                left = deadline - time.monotonic()
                if op.done or left <= 0:
                    return op
                try:
                    await asyncio.wait_for(cond.wait(), timeout=left)
                except TimeoutError:
                    pass

    async def _notify(self, job_id: str) -> None:
        cond = self._changed.get(job_id)
        if cond is not None:
            async with cond:
                cond.notify_all()

    def _spawn(self, job_id: str, request: pb.BatchExplainFeaturesRequest, spec: RunSpec | None = None) -> None:
        if job_id in self._tasks:  # one runner per job, however it was started
            return
        task = asyncio.create_task(self._run(job_id, request, spec), name=f"job-{job_id}")
        self._tasks[job_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(job_id) is done:
                del self._tasks[job_id]

        task.add_done_callback(forget)

    async def _run(self, job_id: str, request: pb.BatchExplainFeaturesRequest, spec: RunSpec | None) -> None:
        try:
            if spec is None:  # resumed: validated when it was submitted
                spec = stored_batch_spec(self.config, request)
            limit = asyncio.Semaphore(request.concurrency or self.config.default_concurrency)
            pending = await asyncio.to_thread(self.store.pending_features, job_id)
            if pending:  # the shared corpus scan first, shown in the job's metadata
                try:
                    await self.explainer.warm(spec.sae_id, lambda p: self.live.mining(job_id, p))
                finally:
                    self.live.mining(job_id, None)

            async def one(position: int, feature_id: int) -> None:
                async with limit:
                    try:
                        await self.run_feature(replace(spec, feature_id=feature_id),
                                               self.live.watch(job_id, feature_id), job_id, position)
                    finally:
                        self.live.finished(job_id, feature_id)
                await self._notify(job_id)

            # A TaskGroup: if the store fails under one feature, the others stop spending.
            async with asyncio.TaskGroup() as group:
                for position, feature in pending:
                    group.create_task(one(position, feature))
            await asyncio.to_thread(self.store.finish_job, job_id, "SUCCEEDED")
            log.info("job_done", job=job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed: the job fails visibly, finished features kept
            if isinstance(exc, ExceptionGroup):
                exc = exc.exceptions[0]
            log.exception("job_failed", job=job_id)
            await asyncio.to_thread(self.store.finish_job, job_id, "FAILED", f"{type(exc).__name__}: {exc}")
        await self._notify(job_id)

    async def run_feature(self, spec: RunSpec, emit: Emit | None = None, job_id: str | None = None,
                          position: int | None = None) -> pb.Explanation:
        """Explain one feature and commit the result. A feature that failed only
        because a service was unavailable, before spending anything, is retried
        a few times first."""
        async with self.slots:
            outcome: Outcome | None = None
            for delay in (*RETRY_DELAYS_S, None):
                outcome = await (self.explainer.explain(spec, emit) if emit else self.explainer.explain(spec))
                # A stream's consumer has seen the failed run's events, so only jobs retry.
                retry = (outcome.error_code is grpc.StatusCode.UNAVAILABLE and outcome.usage.total_tokens == 0
                         and delay is not None and (emit is None or job_id is not None))
                if not retry:
                    break
                log.warning("feature_retry", feature=spec.feature_id, job=job_id, error=outcome.error, delay=delay)
                await asyncio.sleep(delay)
        assert outcome is not None
        name = explanation_name(spec.sae_id, spec.feature_id)
        try:
            explanation = convert.explanation(outcome, name, _timestamp())
        except Exception as exc:  # a bug in what a run produced: record the failure, not the run
            log.exception("explanation_unstorable", feature=spec.feature_id, job=job_id)
            failed = Outcome(spec, outcome.policy, None, usage=outcome.usage, elapsed=outcome.elapsed,
                             error_code=grpc.StatusCode.INTERNAL, stop_reason="internal_error",
                             error=f"internal error ({type(exc).__name__}: {exc}); please report it")
            explanation = convert.explanation(failed, name, _timestamp())
        recorded = await asyncio.to_thread(self.store.record, explanation, job_id, position)
        if not recorded:
            log.warning("duplicate_result_dropped", job=job_id, feature=spec.feature_id)
        return explanation
