"""Long-running scoring requests as google.longrunning operations, kept in memory.

Scoring is a pure function of (explanation, seed, data), so a lost operation is
re-submitted rather than resumed: operations do not survive a restart (the
agent's jobs, which are costly, are the ones kept in SQLite). A ``request_id``
makes submission idempotent for the life of the process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from google.longrunning import operations_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

log = structlog.get_logger(__name__)

PREFIX = "operations/"


class StaleRequest(Exception):
    """The request_id was used before for a different request."""


@dataclass
class _Job:
    id: str
    request: bytes  # the request without its request_id, for idempotency checks
    metadata: Message  # updated in place by the work as it progresses
    create_time: float = field(default_factory=time.time)
    response: Message | None = None
    error: status_pb2.Status | None = None
    task: asyncio.Task[None] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def operation(self) -> operations_pb2.Operation:
        op = operations_pb2.Operation(name=PREFIX + self.id, done=self.finished.is_set())
        op.metadata.Pack(self.metadata)
        if self.error is not None:
            op.error.CopyFrom(self.error)
        elif self.response is not None:
            op.response.Pack(self.response)
        return op


Work = Callable[[Message], Awaitable[Message]]


class Operations:
    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._by_request_id: dict[str, str] = {}

    def submit(self, request: Message, request_id: str, metadata: Message, work: Work) -> operations_pb2.Operation:
        """Start ``work(metadata)`` in the background; its return value is the response."""
        fingerprint = _without_request_id(request)
        if request_id and request_id in self._by_request_id:
            job = self._jobs.get(self._by_request_id[request_id])
            if job is not None:
                if job.request != fingerprint:
                    raise StaleRequest(request_id)
                return job.operation()
        job = _Job(uuid.uuid4().hex, fingerprint, metadata)
        self._jobs[job.id] = job
        if request_id:
            self._by_request_id[request_id] = job.id
        job.task = asyncio.create_task(self._run(job, work))
        return job.operation()

    async def _run(self, job: _Job, work: Work) -> None:
        try:
            job.response = await work(job.metadata)
        except asyncio.CancelledError:
            job.error = status_pb2.Status(code=code_pb2.CANCELLED, message="cancelled by the caller")
        except Exception:
            log.exception("operation_failed", operation=job.id)
            job.error = status_pb2.Status(code=code_pb2.INTERNAL,
                                          message=f"internal error; quote operation {job.id} when reporting it")
        finally:
            job.finished.set()

    def get(self, job_id: str) -> operations_pb2.Operation:
        """KeyError when unknown."""
        return self._jobs[job_id].operation()

    async def wait(self, job_id: str, timeout_s: float) -> operations_pb2.Operation:
        job = self._jobs[job_id]
        try:
            await asyncio.wait_for(job.finished.wait(), timeout_s)
        except TimeoutError:
            pass
        return job.operation()

    def list(self, page_size: int, after: str = "") -> tuple[list[operations_pb2.Operation], str]:
        """Oldest first; the page token is the last id returned."""
        ordered = sorted(self._jobs.values(), key=lambda j: (j.create_time, j.id))
        if after:
            ids = [j.id for j in ordered]
            if after not in ids:
                raise KeyError(after)
            ordered = ordered[ids.index(after) + 1 :]
        page = ordered[:page_size]
        token = page[-1].id if len(ordered) > page_size else ""
        return [j.operation() for j in page], token

    async def cancel(self, job_id: str) -> None:
        job = self._jobs[job_id]
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)

    def delete(self, job_id: str) -> bool:
        """False when the operation is still running (cancel it first)."""
        job = self._jobs[job_id]
        if not job.finished.is_set():
            return False
        del self._jobs[job_id]
        self._by_request_id = {k: v for k, v in self._by_request_id.items() if v != job_id}
        return True

    async def close(self) -> None:
        for job_id in list(self._jobs):
            await self.cancel(job_id)


def _without_request_id(request: Message) -> bytes:
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")  # type: ignore[arg-type]
    return copy.SerializeToString(deterministic=True)


__all__ = ["PREFIX", "Operations", "StaleRequest"]
