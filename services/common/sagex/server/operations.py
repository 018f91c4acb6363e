"""Long-running requests as google.longrunning operations, kept in SQLite: one
engine for the agent's batch jobs and scoring's batches and comparisons.

A job (a service's ``Job``) splits its request into units; each unit's result is
committed with its "done" mark as soon as it is scored. A server that stops or
crashes leaves its operations RUNNING; the next one (or a live peer on the same
database) adopts them before serving and runs only the units still pending, so
every unit is scored and recorded exactly once. A job that cannot go on after a
restart (say a scoring explainer is no longer configured) fails with
FAILED_PRECONDITION, and the results of its finished units travel in the
status's details. A ``request_id`` makes submission idempotent for as long as
the operation is kept; finished operations are evicted after the retention.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import structlog
from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import aio

from sagex.server.errors import InvalidArgument
from sagex.server.opstore import OperationRow, OperationStore, Progress, Runner, StaleRequest, UnitRow

log = structlog.get_logger(__name__)

PREFIX = "operations/"
HEARTBEAT_S = 10.0  # how often a server renews its lease, adopts orphans and evicts
LEASE_S = 60.0  # a server silent this long has lost its operations to a live one
POLL_S = 1.0  # WaitOperation re-reads operations run by another server this often

# Runner tokens of the Operations alive in this process.
_live_tokens: set[str] = set()


class CannotResume(Exception):
    """A stored job cannot go on here; ``subject`` names what is missing."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(reason)
        self.subject = subject
        self.reason = reason


@dataclass(frozen=True)
class UnitResult:
    result: Message | None  # None: the unit finished without one (``note`` says why)
    failed: bool = False
    note: str = ""
    # The service's own records of this unit, written in the unit's transaction
    # (the agent's explanation): both land, or neither does.
    also: Callable[[sqlite3.Connection], None] | None = None


Commit = Callable[[int, UnitResult], Awaitable[None]]


class Job(Protocol):
    """One long-running request: its units, how to run them and how to sum them up."""

    kind: ClassVar[str]

    @property
    def request(self) -> Message: ...

    @property
    def plan(self) -> dict[str, Any]:
        """JSON: what the request was resolved to when it was accepted."""
        ...

    @property
    def concurrency(self) -> int:
        """Items run at once (0: the engine's default)."""
        ...

    def items(self) -> list[int]:
        """The item (request entry) of every unit, by position."""
        ...

    async def check(self) -> None:
        """Raise CannotResume when a resumed job can no longer run here."""
        ...

    async def run_item(self, op_id: str, item: int, positions: Sequence[int], commit: Commit) -> None:
        """Run the pending units of one item, committing each as it finishes."""
        ...

    def response(self, units: Sequence[UnitRow]) -> Message:
        """The response from the finished units among ``units`` (all of them, or a part)."""
        ...

    def summary(self, progress: Progress) -> str:
        """e.g. "3 of 8 explanations"."""
        ...


class JobLoader(Protocol):
    def load(self, kind: str, request: bytes, plan: dict[str, Any]) -> Job:
        """A stored job, ready to resume; ValueError when it cannot be rebuilt."""
        ...

    def metadata(self, row: OperationRow, progress: Progress) -> Message:
        """The operation's metadata; called off the event loop (it may read the store)."""
        ...


def _host() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _any(message: Message) -> bytes:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed.SerializeToString()


class Operations:
    """The operations of one server. Call ``start`` before serving (it resumes
    what a previous process left running) and ``close`` when stopping (running
    operations stay RUNNING for the next server)."""

    def __init__(self, store: OperationStore, jobs: JobLoader, *, concurrency: int, retention_s: float,
                 heartbeat_s: float = HEARTBEAT_S, lease_s: float = LEASE_S) -> None:
        self.store = store
        self.jobs = jobs
        self.concurrency = concurrency  # items of one operation run at once
        self.retention_s = retention_s
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.runner = Runner(uuid.uuid4().hex, _host(), os.getpid())
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: dict[str, asyncio.Event] = {}
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> int:
        """Register, evict expired operations and resume orphaned ones; returns how many were resumed."""
        _live_tokens.add(self.runner.token)
        await asyncio.to_thread(self.store.register, self.runner)
        resumed = await self._housekeeping()
        self._ticker = asyncio.create_task(self._tick_forever(), name="operations-heartbeat")
        return resumed

    async def close(self) -> None:
        """Stop running operations without marking them: a restart resumes them."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.runner.token in _live_tokens:
            await asyncio.to_thread(self.store.release, self.runner)
            _live_tokens.discard(self.runner.token)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._housekeeping()
            except Exception:  # the next tick tries again; the operations keep running meanwhile
                log.exception("operations_housekeeping_failed")

    async def _housekeeping(self) -> int:
        running = set(self._tasks)  # before the query: an operation submitted meanwhile is not judged
        owned = await asyncio.to_thread(self.store.heartbeat, self.runner)
        for op_id in running - owned:  # finished, cancelled or taken over by another server meanwhile
            task = self._tasks.get(op_id)
            if task is not None:
                task.cancel()
        evicted = await asyncio.to_thread(self.store.evict, time.time() - self.retention_s)
        if evicted:
            log.info("operations_evicted", count=evicted, retention_hours=self.retention_s / 3600)
        adopted = await asyncio.to_thread(self.store.adopt, self.runner, set(_live_tokens), self.lease_s)
        for row in adopted:
            await self._resume(row)
        return len(adopted)

    async def _resume(self, row: OperationRow) -> None:
        try:
            job = self.jobs.load(row.kind, row.request, row.plan)
        except Exception as exc:
            log.warning("operation_unresumable", operation=row.id, kind=row.kind, reason=str(exc))
            status = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION,
                                       message=f"cannot resume after a restart: {exc}")
            await asyncio.to_thread(self.store.finish, row.id, "FAILED", error=status.SerializeToString())
            return
        progress = await asyncio.to_thread(self.store.progress, row.id)
        log.info("operation_resumed", operation=row.id, kind=row.kind, units=progress.units,
                 remaining=progress.units - progress.units_done)
        self._spawn(row.id, job, resumed=True)

    # -- the work ---------------------------------------------------------------

    async def submit(self, job: Job, request_id: str) -> operations_pb2.Operation:
        """Store the job and start it, or return the operation already stored under
        ``request_id``. Raises StaleRequest when that key named another request."""
        op_id, created = await asyncio.to_thread(
            self.store.create, uuid.uuid4().hex, job.kind, job.request.SerializeToString(deterministic=True),
            request_id, job.plan, job.items(), self.runner.token)
        if created:
            log.info("operation_created", operation=op_id, kind=job.kind, units=len(job.items()))
            self._spawn(op_id, job, resumed=False)
        return await self.get(op_id)

    def _spawn(self, op_id: str, job: Job, *, resumed: bool) -> None:
        if op_id in self._tasks:  # one runner per operation, however it was started
            return
        self._finished.setdefault(op_id, asyncio.Event())
        task = asyncio.create_task(self._run(op_id, job, resumed), name=f"operation-{op_id}")
        self._tasks[op_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(op_id) is done:
                del self._tasks[op_id]
            event = self._finished.pop(op_id, None)
            if event is not None:
                event.set()

        task.add_done_callback(forget)

    async def _run(self, op_id: str, job: Job, resumed: bool) -> None:
        try:
            if resumed:
                await job.check()
            pending = await asyncio.to_thread(self.store.pending, op_id)
            by_item: dict[int, list[int]] = {}
            for position, item in pending:
                by_item.setdefault(item, []).append(position)
            gate = asyncio.Semaphore(job.concurrency or self.concurrency)

            async def commit(position: int, unit: UnitResult) -> None:
                body = None if unit.result is None else unit.result.SerializeToString(deterministic=True)
                if not await asyncio.to_thread(self.store.commit_unit, op_id, position, body, unit.failed, unit.note,
                                               unit.also):
                    log.warning("duplicate_unit_dropped", operation=op_id, position=position)

            async def one(item: int, positions: list[int]) -> None:
                async with gate:
                    await job.run_item(op_id, item, positions, commit)

            # A TaskGroup: if one item fails (a bug, the store), the others stop spending.
            async with asyncio.TaskGroup() as group:
                for item, positions in by_item.items():
                    group.create_task(one(item, positions))
            units = await asyncio.to_thread(self.store.units, op_id)
            response = _any(job.response(units))
            if await asyncio.to_thread(self.store.finish, op_id, "SUCCEEDED", response=response):
                log.info("operation_done", operation=op_id, kind=job.kind)
        except asyncio.CancelledError:
            raise  # cancelled by the caller (already recorded) or the server is stopping (resumed later)
        except Exception as exc:
            if isinstance(exc, ExceptionGroup):
                exc = exc.exceptions[0]
            if isinstance(exc, CannotResume):
                log.warning("operation_unresumable", operation=op_id, kind=job.kind, reason=exc.reason)
                status = await self._stopped(op_id, job, code_pb2.FAILED_PRECONDITION,
                                             f"cannot resume after a restart: {exc.reason}")
                status.details.add().Pack(error_details_pb2.PreconditionFailure(violations=[
                    error_details_pb2.PreconditionFailure.Violation(type="RESUME", subject=exc.subject,
                                                                    description=exc.reason)]))
            else:
                log.exception("operation_failed", operation=op_id, kind=job.kind)
                status = await self._stopped(op_id, job, code_pb2.INTERNAL,
                                             f"internal error; quote operation {op_id} when reporting it")
            await asyncio.to_thread(self.store.finish, op_id, "FAILED", error=status.SerializeToString())

    async def _stopped(self, op_id: str, job: Job, code: int, message: str) -> status_pb2.Status:
        """A status for an operation that ends early: what happened, how far it got,
        and the results of its finished units as a detail (the job's response type)."""
        units = await asyncio.to_thread(self.store.units, op_id)
        progress = await asyncio.to_thread(self.store.progress, op_id)
        status = status_pb2.Status(code=code, message=f"{message}; {job.summary(progress)} were finished, and "
                                                      "their results are in this status's details")
        try:
            status.details.add().Pack(job.response([u for u in units if u.done]))
        except Exception:
            log.exception("partial_response_failed", operation=op_id)
        return status

    # -- the Operations API -----------------------------------------------------

    def _operation(self, row: OperationRow) -> operations_pb2.Operation:
        """Runs off the event loop: the job's metadata may read the store."""
        op = operations_pb2.Operation(name=PREFIX + row.id, done=row.done)
        try:
            op.metadata.Pack(self.jobs.metadata(row, self.store.progress(row.id)))
        except ValueError:  # a kind this version does not know: no metadata rather than no operation
            pass
        if row.error is not None:
            op.error.ParseFromString(row.error)
        elif row.response is not None:
            op.response.ParseFromString(row.response)
        return op

    def _row(self, op_id: str) -> OperationRow:
        row = self.store.operation(op_id)
        if row is None:
            raise KeyError(op_id)
        return row

    async def get(self, op_id: str) -> operations_pb2.Operation:
        """KeyError when unknown."""
        return await asyncio.to_thread(lambda: self._operation(self._row(op_id)))

    async def wait(self, op_id: str, timeout_s: float) -> operations_pb2.Operation:
        """The operation once done, or as it stands after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            op = await self.get(op_id)
            left = deadline - time.monotonic()
            if op.done or left <= 0:
                return op
            event = self._finished.get(op_id)  # none: another server runs it, so poll
            try:
                await asyncio.wait_for(event.wait() if event else asyncio.sleep(left), min(left, POLL_S))
            except TimeoutError:
                pass

    async def list(self, page_size: int, after: str = "") -> tuple[list[operations_pb2.Operation], str]:
        """Newest first; the page token is the last id returned. KeyError for an unknown token."""

        def page() -> tuple[list[operations_pb2.Operation], str]:
            rows, token = self.store.page(page_size, after)
            return [self._operation(r) for r in rows], token

        return await asyncio.to_thread(page)

    async def cancel(self, op_id: str) -> None:
        """Record the cancellation, then stop the work; a finished operation stays as
        it is. KeyError when unknown."""
        row = await asyncio.to_thread(self._row, op_id)
        if row.done:
            return
        task = self._tasks.get(op_id)
        try:
            job = self.jobs.load(row.kind, row.request, row.plan)
            status = await self._stopped(op_id, job, code_pb2.CANCELLED, "cancelled by the caller")
        except ValueError:
            status = status_pb2.Status(code=code_pb2.CANCELLED, message="cancelled by the caller")
        # Recorded first: if this call is interrupted, a restart must not resume the operation.
        await asyncio.to_thread(self.store.finish, op_id, "CANCELLED", error=status.SerializeToString())
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def delete(self, op_id: str) -> bool:
        """False when the operation is still running (cancel it first); KeyError when unknown."""
        deleted = await asyncio.to_thread(self.store.delete, op_id)
        if deleted is None:
            raise KeyError(op_id)
        return deleted


MAX_WAIT_S = 600.0


def wait_seconds(request: operations_pb2.WaitOperationRequest, context: aio.ServicerContext,
                 max_wait_s: float = MAX_WAIT_S) -> float:
    """How long a WaitOperation may block: the request's timeout (none: ``max_wait_s``),
    capped by ``max_wait_s`` and ending half a second before the caller's deadline.
    Plain arithmetic on the Duration: ToTimedelta overflows on the huge ones clients send."""
    timeout = request.timeout.seconds + request.timeout.nanos / 1e9 if request.HasField("timeout") else max_wait_s
    if timeout < 0:
        raise InvalidArgument.one("timeout", "must be >= 0")
    remaining = context.time_remaining()
    if remaining is not None:
        timeout = min(timeout, max(remaining - 0.5, 0.0))  # answer before the caller's deadline
    return min(timeout, max_wait_s)


__all__ = ["PREFIX", "CannotResume", "Commit", "Job", "JobLoader", "Operations", "StaleRequest", "UnitResult",
           "wait_seconds"]
