"""The dynamic batcher: shared forward passes under a token budget, bounded
admission, deadlines and cancellation. A counting fake stands in for the model
(the model itself is exercised over gRPC in test_conformance)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
import torch

from sagex.activation.batcher import DynamicBatcher
from sagex.activation.encode import SparseRows, TopK
from sagex.activation.engine import WorkItem
from sagex.server.errors import DeadlineExceeded, ResourceExhausted, Unavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")


class SlowEcho:
    """Returns one row per token whose only value is the token id; records batches."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[tuple[int, ...]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: Sequence[WorkItem]) -> list[SparseRows]:
        self.gate.wait()
        time.sleep(self.delay)
        self.batches.append([it.ids for it in items])
        return [
            SparseRows(torch.arange(len(it.ids) + 1), torch.zeros(len(it.ids), dtype=torch.int32),
                       torch.tensor(it.ids, dtype=torch.float32))
            for it in items
        ]


def _item(n: int, tag: int = 1) -> WorkItem:
    return WorkItem(tuple([tag] * n), "sae", TopK(1))


async def test_concurrent_callers_share_batches_within_budget() -> None:
    run = SlowEcho(delay=0.02)
    batcher = DynamicBatcher(run, token_budget=64, max_queue=100)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit([_item(8, tag=i)]) for i in range(16)))
    finally:
        batcher.close()
    assert [r[0].values[0].item() for r in results] == list(range(16)), "each caller gets its own result"
    assert len(run.batches) < 16, "concurrent requests must share forward passes"
    assert all(len(b) * max(map(len, b)) <= 64 for b in run.batches), "padded tokens stay within the budget"


async def test_full_queue_is_resource_exhausted_and_admits_nothing() -> None:
    run = SlowEcho()
    run.gate.clear()  # hold the worker inside the model so the queue fills behind it
    batcher = DynamicBatcher(run, token_budget=2, max_queue=4)
    batcher.start()
    try:
        blocker = asyncio.ensure_future(batcher.submit([_item(2)]))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(batcher.submit([_item(2)] * 3))
        await asyncio.sleep(0.05)
        assert batcher.depth == 3
        with pytest.raises(ResourceExhausted, match="queue is full"):
            await batcher.submit([_item(2)] * 2)
        assert batcher.depth == 3, "a rejected request leaves nothing behind"
        run.gate.set()
        await blocker
        assert len(await queued) == 3
    finally:
        run.gate.set()
        batcher.close()


async def test_deadline_and_cancellation_drop_queued_work() -> None:
    run = SlowEcho()
    run.gate.clear()
    batcher = DynamicBatcher(run, token_budget=4, max_queue=100)
    batcher.start()
    try:
        blocker = asyncio.ensure_future(batcher.submit([_item(4)]))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit([_item(4, tag=7)], timeout=0.05)
        cancelled = asyncio.ensure_future(batcher.submit([_item(4, tag=9)]))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await asyncio.sleep(0.05)
        run.gate.set()
        await blocker
        await batcher.submit([_item(4, tag=3)])
    finally:
        run.gate.set()
        batcher.close()
    seen = {ids[0] for batch in run.batches for ids in batch}
    assert 7 not in seen and 9 not in seen, "expired and cancelled work never reaches the model"
    # submit() cancels its own jobs at its deadline, so both arrive at the worker cancelled.
    assert batcher.stats.dropped_cancelled == 2


async def test_a_failing_batch_fails_its_callers_and_the_worker_lives_on() -> None:
    calls = {"n": 0}
    echo = SlowEcho()

    def flaky(items: Sequence[WorkItem]) -> list[SparseRows]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return echo(items)

    batcher = DynamicBatcher(flaky, token_budget=64, max_queue=10)
    batcher.start()
    try:
        with pytest.raises(ResourceExhausted, match="out of memory"):
            await batcher.submit([_item(4)])
        assert len(await batcher.submit([_item(4)])) == 1
    finally:
        batcher.close()
    with pytest.raises(Unavailable):
        await batcher.submit([_item(4)])


async def test_an_exclusive_submit_is_one_forward_pass_of_its_own() -> None:
    """Mining's batches: never merged with other callers' work, never split by the budget,
    and dropped whole when cancelled (a partial group would be another batch)."""
    run = SlowEcho()
    run.gate.clear()
    batcher = DynamicBatcher(run, token_budget=8, max_queue=100)
    batcher.start()
    try:
        blocker = asyncio.ensure_future(batcher.submit([_item(4)]))
        await asyncio.sleep(0.05)  # the worker is inside the model; the rest queues up behind it
        before = asyncio.ensure_future(batcher.submit([_item(1, tag=2)]))
        await asyncio.sleep(0.01)
        group = asyncio.ensure_future(batcher.submit([_item(4, tag=5)] * 3, exclusive=True))  # 12 tokens > budget 8
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.submit([_item(2, tag=8)] * 2, exclusive=True))
        await asyncio.sleep(0.01)
        after = asyncio.ensure_future(batcher.submit([_item(1, tag=3)]))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0.05)
        run.gate.set()
        await asyncio.gather(blocker, before, after)
        assert len(await group) == 3
    finally:
        run.gate.set()
        batcher.close()
    tags = [sorted({ids[0] for ids in batch}) for batch in run.batches]
    assert [len(b) for b in run.batches if b[0][0] == 5] == [3], "the group ran whole, in one forward pass"
    assert [5] in tags and all(5 not in t or t == [5] for t in tags), "and alone"
    assert all(8 not in t for t in tags), "a cancelled group never reaches the model"
    assert tags == [[1], [2], [5], [3]], "queue order kept: the work queued before and after runs around it"
