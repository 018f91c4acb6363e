"""Dynamic batching: concurrent requests share forward passes under a token budget.

The event loop only enqueues and awaits futures; one worker thread owns the
model (GPU work never runs on the event loop). Admission is all-or-nothing per
request and bounded: a full queue answers RESOURCE_EXHAUSTED at once rather
than letting latency grow without limit. Cancelled or expired work is dropped
before it reaches the model.

An ``exclusive`` submit runs as exactly one forward pass of its own, never merged
with other work nor split: a text's activations can depend (in the last bits) on
the batch it shares, so exemplar mining, whose index must be the same bits on
every replica, forms its batches itself and runs each one alone.

Metrics: ``sagex_activation_queue_texts`` (texts waiting, read at scrape time),
``sagex_activation_tokens_total`` (tokens run; its rate() is tokens/s),
``sagex_activation_texts_total`` and ``sagex_activation_batch_seconds``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import prometheus_client
import structlog
import torch

from sagex.activation.encode import SparseRows
from sagex.activation.engine import WorkItem
from sagex.server.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from sagex.server.metrics import REGISTRY

log = structlog.get_logger(__name__)

_LIVE: weakref.WeakSet[DynamicBatcher] = weakref.WeakSet()  # every batcher of the process, for the queue gauge
QUEUE_TEXTS = prometheus_client.Gauge("sagex_activation_queue_texts", "Texts waiting for a forward pass.",
                                      registry=REGISTRY)
QUEUE_TEXTS.set_function(lambda: sum(b.depth for b in list(_LIVE)))
TOKENS = prometheus_client.Counter("sagex_activation_tokens_total",
                                   "Tokens run through the model and SAEs (unpadded).", registry=REGISTRY)
TEXTS = prometheus_client.Counter("sagex_activation_texts_total", "Texts run through the model and SAEs.",
                                  registry=REGISTRY)
BATCH_SECONDS = prometheus_client.Histogram(
    "sagex_activation_batch_seconds", "Time of one batch's forward pass and SAE encoding.", registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

RunFn = Callable[[Sequence[WorkItem]], list[SparseRows]]


@dataclass
class _Job:
    item: WorkItem
    future: asyncio.Future[SparseRows]
    loop: asyncio.AbstractEventLoop
    deadline: float | None  # time.monotonic() seconds
    group: object | None = None  # jobs of one exclusive submit share this marker and run alone, together


@dataclass
class BatcherStats:
    batches: int = 0
    texts: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    dropped_cancelled: int = 0
    dropped_expired: int = 0
    busy_seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class DynamicBatcher:
    def __init__(self, run: RunFn, token_budget: int, max_queue: int) -> None:
        self._run = run
        self._budget = token_budget
        self._max_queue = max_queue
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._worker, name="sagex-batcher", daemon=True)
        self.stats = BatcherStats()
        _LIVE.add(self)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            _resolve(job, error=Unavailable("server is shutting down; retry on another replica"))
        self._thread.join(timeout=30)

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, items: Sequence[WorkItem], timeout: float | None = None,
                     exclusive: bool = False) -> list[SparseRows]:
        """Run ``items`` (possibly alongside other callers' work) and return their rows in order;
        ``exclusive``: as one forward pass of their own, whatever the token budget.

        Raises ResourceExhausted when the queue cannot take all of them, DeadlineExceeded
        when ``timeout`` passes first. Cancelling the awaiting task drops the pending work.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        group = object() if exclusive else None
        jobs = [_Job(it, loop.create_future(), loop, deadline, group) for it in items]
        with self._cond:
            if self._closed or not self._thread.is_alive():
                raise Unavailable("the activation worker is not running; retry on another replica")
            if len(self._queue) + len(jobs) > self._max_queue:
                raise ResourceExhausted(
                    f"activation queue is full ({len(self._queue)} texts waiting, limit {self._max_queue}); "
                    "retry after a short backoff or send smaller batches",
                    retry_after_s=0.2 + 0.001 * len(self._queue),
                )
            self._queue.extend(jobs)
            self._cond.notify()
        futures = [j.future for j in jobs]
        try:
            done, pending = await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    raise fut.exception()  # type: ignore[misc]
            if pending:
                raise DeadlineExceeded(f"activations not ready within {timeout:.3g}s")
            return [f.result() for f in futures]
        finally:
            for job in jobs:  # on cancel or error: whatever has not run is dropped
                job.future.cancel()

    # --- worker thread -------------------------------------------------------

    def _take_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            batch: list[_Job] = []
            width = 0
            now = time.monotonic()
            while self._queue:
                job = self._queue[0]
                if job.group is not None:
                    if batch:  # an exclusive group waits for the next forward pass, whole
                        break
                    return self._take_group(job.group, now)
                if job.future.cancelled():
                    self._queue.popleft()
                    self.stats.dropped_cancelled += 1
                    continue
                if job.deadline is not None and now > job.deadline:
                    self._queue.popleft()
                    self.stats.dropped_expired += 1
                    _resolve(job, error=DeadlineExceeded("deadline passed while queued"))
                    continue
                new_width = max(width, len(job.item.ids))
                if batch and new_width * (len(batch) + 1) > self._budget:
                    break
                batch.append(self._queue.popleft())
                width = new_width
            return batch

    def _take_group(self, group: object, now: float) -> list[_Job]:
        """The exclusive group at the head of the queue (its jobs were queued together).
        A group missing a member would be another batch, so one cancelled or expired job
        drops the whole group."""
        jobs: list[_Job] = []
        while self._queue and self._queue[0].group is group:
            jobs.append(self._queue.popleft())
        if any(j.future.cancelled() for j in jobs):
            self.stats.dropped_cancelled += len(jobs)
            for job in jobs:
                _resolve(job, error=Unavailable("dropped: part of its exclusive batch was cancelled"))
            return []
        if any(j.deadline is not None and now > j.deadline for j in jobs):
            self.stats.dropped_expired += len(jobs)
            for job in jobs:
                _resolve(job, error=DeadlineExceeded("deadline passed while queued"))
            return []
        return jobs

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._run_batch(batch)
            except BaseException as exc:  # the thread must outlive any one batch
                log.error("batch_failed", exc_info=exc, texts=len(batch))
                error: BaseException = exc
                if isinstance(exc, torch.OutOfMemoryError):
                    error = ResourceExhausted(
                        "the accelerator ran out of memory on this batch; retry with fewer or shorter texts",
                        retry_after_s=1.0,
                    )
                for job in batch:
                    _resolve(job, error=error)

    def _run_batch(self, batch: list[_Job]) -> None:
        start = time.perf_counter()
        rows = self._run([job.item for job in batch])
        if len(rows) != len(batch):
            raise RuntimeError(f"engine returned {len(rows)} results for {len(batch)} texts")
        elapsed = time.perf_counter() - start
        tokens = sum(len(j.item.ids) for j in batch)
        s = self.stats
        s.batches += 1
        s.texts += len(batch)
        s.tokens += tokens
        s.padded_tokens += len(batch) * max(len(j.item.ids) for j in batch)
        s.busy_seconds += elapsed
        TOKENS.inc(tokens)
        TEXTS.inc(len(batch))
        BATCH_SECONDS.observe(elapsed)
        if len(s.batch_sizes) < 10_000:
            s.batch_sizes.append(len(batch))
        for job, result in zip(batch, rows, strict=True):
            _resolve(job, result=result)


def _resolve(job: _Job, result: SparseRows | None = None, error: BaseException | None = None) -> None:
    def deliver() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)  # type: ignore[arg-type]

    try:
        job.loop.call_soon_threadsafe(deliver)
    except RuntimeError:  # the caller's loop is gone; nobody is waiting
        pass
