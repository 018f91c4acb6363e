"""Bad input gets INVALID_ARGUMENT / NOT_FOUND with a message that says what to fix,
with BadRequest details, and the server keeps serving."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.api.activation.v1 import activation_service_pb2 as pb

pytestmark = pytest.mark.asyncio(loop_scope="session")
SAE = EMBEDDED_SAE_ID


async def _stream_error(stub, *requests: pb.StreamActivationsRequest) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    async def gen():  # type: ignore[no-untyped-def]
        for r in requests:
            yield r

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.StreamActivations(gen()):
            pass
    return info.value


def _violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None, "rich status details are missing"
    out = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


@pytest.mark.parametrize(
    ("request_kwargs", "field", "hint"),
    [
        ({"texts": []}, "texts", "exactly one"),
        ({"texts": ["ok", ""]}, "texts[1]", "empty"),
        ({"texts": ["x" * 20_001]}, "texts[0]", "20000"),
        ({"texts": ["ok"] * 257}, "texts", "at most 256"),
        ({"texts": ["ok"], "features": pb.FeatureIdSelection(feature_ids=[4608])}, "features.feature_ids", "0..4607"),
        ({"texts": ["ok"], "features": pb.FeatureIdSelection(feature_ids=[])}, "features.feature_ids", "at least one"),
        ({"texts": ["ok"], "features": pb.FeatureIdSelection(feature_ids=[3, 3])}, "features.feature_ids", "distinct"),
        ({"texts": ["ok"], "top_k": pb.TopKSelection(k=0)}, "top_k.k", "1..256"),
        ({"texts": ["ok"], "threshold": pb.ThresholdSelection(min_activation=-1)}, "threshold.min_activation", ">= 0"),
        ({"texts": ["ok"], "threshold": pb.ThresholdSelection(min_activation=float("nan"))},
         "threshold.min_activation", "finite"),
        ({"token_ids": [pb.TokenIds(ids=[1, 10**9])]}, "token_ids[0]", "vocabulary"),
    ],
)
async def test_bad_stream_requests_are_invalid_argument(stub, request_kwargs, field, hint) -> None:  # type: ignore[no-untyped-def]
    kwargs = {"batch_id": "b", "sae_id": SAE, "top_k": pb.TopKSelection(k=4), **request_kwargs}
    if "features" in request_kwargs or "threshold" in request_kwargs:
        kwargs.pop("top_k")
    err = await _stream_error(stub, pb.StreamActivationsRequest(**kwargs))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = _violations(err)
    assert field in violations, violations
    assert hint in violations[field]


async def test_missing_selection_and_unknown_sae(stub) -> None:  # type: ignore[no-untyped-def]
    err = await _stream_error(stub, pb.StreamActivationsRequest(batch_id="b", sae_id=SAE, texts=["hi"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "selection" in _violations(err)
    err = await _stream_error(stub, pb.StreamActivationsRequest(batch_id="b", sae_id="gpt2/../../etc", texts=["hi"],
                                                                top_k=pb.TopKSelection(k=1)))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert SAE in err.details(), "the message lists the configured SAEs"


async def test_too_many_tokens_says_how_to_fix(stub) -> None:  # type: ignore[no-untyped-def]
    err = await _stream_error(stub, pb.StreamActivationsRequest(batch_id="b", sae_id=SAE, texts=["word " * 1500],
                                                                top_k=pb.TopKSelection(k=1)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit is 1024" in err.details()


async def test_duplicate_inflight_batch_id(stub) -> None:  # type: ignore[no-untyped-def]
    req = pb.StreamActivationsRequest(batch_id="same", sae_id=SAE, texts=["one " * 200], top_k=pb.TopKSelection(k=1))
    err = await _stream_error(stub, req, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "batch_id" in _violations(err)


async def test_bad_mining_and_stats_requests(stub) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (pb.MineExemplarsRequest(sae_id=SAE, feature_ids=[99999]), "feature_ids"),
        (pb.MineExemplarsRequest(sae_id=SAE, feature_ids=[1], top_k=1000), "top_k"),
        (pb.MineExemplarsRequest(sae_id=SAE, feature_ids=[1], split=42), "split"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.MineExemplars(request):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in _violations(info.value)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetFeatureStatistics(pb.GetFeatureStatisticsRequest(sae_id="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Tokenize(pb.TokenizeRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_server_still_serves_after_bad_input(stub) -> None:  # type: ignore[no-untyped-def]
    res = await stub.Tokenize(pb.TokenizeRequest(texts=["still alive"]))
    assert list(res.tokens[0].texts) == ["still", " alive"]


async def test_oversize_message_is_resource_exhausted(stub) -> None:  # type: ignore[no-untyped-def]
    huge = pb.StreamActivationsRequest(batch_id="big", sae_id=SAE, texts=["x" * 1_000_000] * 17,
                                       top_k=pb.TopKSelection(k=1))
    err = await _stream_error(stub, huge)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (err.details() or "")
