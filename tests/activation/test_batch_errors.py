"""Per-batch status on StreamActivations: with per_batch_errors a bad batch fails alone
(a response with its status) and the stream goes on; without it, as before, the first
bad batch ends the stream."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.api.activation.v1 import activation_service_pb2 as pb

pytestmark = pytest.mark.asyncio(loop_scope="session")
SAE = EMBEDDED_SAE_ID


def batch(batch_id: str, **kwargs: object) -> pb.StreamActivationsRequest:
    fields = {"sae_id": SAE, "texts": ["In the beginning God created the heaven"], "top_k": pb.TopKSelection(k=2),
              "per_batch_errors": True, **kwargs}
    return pb.StreamActivationsRequest(batch_id=batch_id, **fields)  # type: ignore[arg-type]


async def test_a_bad_batch_fails_alone_and_the_stream_goes_on(stub) -> None:  # type: ignore[no-untyped-def]
    queue: asyncio.Queue[pb.StreamActivationsRequest | None] = asyncio.Queue()

    async def requests():  # type: ignore[no-untyped-def]
        while (item := await queue.get()) is not None:
            yield item

    call = stub.StreamActivations(requests(), timeout=120)
    got: dict[str, list[pb.StreamActivationsResponse]] = {}

    async def until_complete(batch_id: str) -> list[pb.StreamActivationsResponse]:
        while not (got.get(batch_id) and got[batch_id][-1].batch_complete):
            msg = await call.read()
            assert msg is not grpc.aio.EOF, f"the stream ended before {batch_id} was answered"
            got.setdefault(msg.batch_id, []).append(msg)
        return got[batch_id]

    await queue.put(batch("good-1"))
    first = await until_complete("good-1")
    assert not first[-1].HasField("error") and first[0].tokens.ids
    # An unknown SAE, then a bad field: each answered with its own status.
    await queue.put(batch("bad-sae", sae_id="no-such-sae"))
    [missing] = await until_complete("bad-sae")
    assert missing.error.code == code_pb2.NOT_FOUND and "no-such-sae" in missing.error.message
    assert not missing.tokens.ids and missing.batch_complete
    await queue.put(batch("bad-k", top_k=pb.TopKSelection(k=0)))
    [invalid] = await until_complete("bad-k")
    assert invalid.error.code == code_pb2.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert invalid.error.details[0].Unpack(bad) and bad.field_violations[0].field == "top_k.k"
    # The stream is still open and serves the next batch exactly as the first.
    await queue.put(batch("good-2"))
    second = await until_complete("good-2")
    assert [m.tokens.ids for m in second] == [m.tokens.ids for m in first]
    assert [m.activations.values for m in second] == [m.activations.values for m in first]
    await queue.put(None)
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_without_the_flag_a_bad_batch_still_ends_the_stream(stub) -> None:  # type: ignore[no-untyped-def]
    requests = [batch("good", per_batch_errors=False), batch("bad", sae_id="no-such-sae", per_batch_errors=False)]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.StreamActivations(iter(requests), timeout=120):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_duplicate_batch_id_ends_the_stream_even_with_the_flag(stub) -> None:  # type: ignore[no-untyped-def]
    slow = batch("same", texts=["one " * 200])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.StreamActivations(iter([slow, slow]), timeout=120):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "already in flight" in info.value.details()


async def test_an_over_long_batch_id_is_not_echoed(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.StreamActivations(iter([batch("b" * 10_000)]), timeout=120):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 128" in info.value.details()
