"""BuildExemplarIndex: a build's progress streamed to the caller, shared by every
caller and never stopped by one that leaves; real server, real model, fresh cache
(the conftest's slow_mining: 50 ms per scan batch)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
from sagex.api.common.v1 import types_pb2
from sagex.server.lifecycle import channel_options

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def fresh(slow_mining) -> AsyncIterator[tuple[object, dict[str, int], object]]:  # type: ignore[no-untyped-def]
    async with slow_mining(0.05) as server:
        async with grpc.aio.insecure_channel(server.address, options=channel_options()) as channel:
            yield pb_grpc.ActivationServiceStub(channel), server.counts, server.miner


def _request(**kwargs: object) -> pb.BuildExemplarIndexRequest:
    return pb.BuildExemplarIndexRequest(sae_id=EMBEDDED_SAE_ID, split=types_pb2.CORPUS_SPLIT_EXEMPLAR, **kwargs)


async def test_progress_streams_until_ready_and_a_caller_leaving_does_not_stop_the_build(fresh) -> None:  # type: ignore[no-untyped-def]
    stub, submitted, miner = fresh
    # One caller reads the first message and leaves: the build goes on.
    first = stub.BuildExemplarIndex(_request(interval_seconds=0.1))
    async for _ in first:
        break
    first.cancel()

    messages = [m.progress async for m in stub.BuildExemplarIndex(_request(interval_seconds=0.1))]
    last = messages[-1]
    assert last.phase == types_pb2.MINING_PHASE_READY and last.eta_seconds == 0.0
    assert last.tokens_done == last.tokens_total > 0 and last.windows_done == last.windows_total > 0
    scanning = [m for m in messages if m.phase == types_pb2.MINING_PHASE_SCANNING]
    assert scanning, "progress was streamed while the scan ran"
    done = [m.tokens_done for m in scanning]
    assert done == sorted(done) and all(m.tokens_total == last.tokens_total for m in scanning)
    timed = [m for m in scanning if m.tokens_done > 0]
    assert timed and all(m.HasField("eta_seconds") and m.tokens_per_second > 0 for m in timed)
    assert not last.cached and last.sae_id == EMBEDDED_SAE_ID and last.split == types_pb2.CORPUS_SPLIT_EXEMPLAR
    # Every shard's windows in batches of 4 of their own.
    [root] = [p for p in miner._cache_root.iterdir() if (p / "complete.json").is_file()]
    shards = miner.shard_count(last.windows_total)
    per_shard = np.bincount(np.fromfile(root / "shard_of.u16", np.uint16), minlength=shards)
    assert len(per_shard) == shards > 1 and per_shard.sum() == last.windows_total
    batches = int(sum(-(-int(n) // 4) for n in per_shard))
    assert last.shards_done == last.shards_total == shards
    shards_done = [m.shards_done for m in scanning]
    assert shards_done == sorted(shards_done) and shards_done[0] < shards
    assert all(m.shards_total == shards for m in scanning)
    assert submitted["batches"] == batches, "one build for both callers, every batch run once"

    # Now the index is there: one READY message, nothing scanned again.
    again = [m.progress async for m in stub.BuildExemplarIndex(_request())]
    assert len(again) == 1 and again[0].phase == types_pb2.MINING_PHASE_READY and again[0].cached
    assert again[0].tokens_total == last.tokens_total
    assert submitted["batches"] == batches


async def test_bad_requests_say_what_to_fix(fresh) -> None:  # type: ignore[no-untyped-def]
    stub, *_ = fresh
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.BuildExemplarIndex(_request(interval_seconds=600)):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "interval_seconds" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.BuildExemplarIndex(pb.BuildExemplarIndexRequest(sae_id="nope")):
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
