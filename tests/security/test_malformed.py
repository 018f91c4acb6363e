"""Request bytes that are not a valid message, as any non-Python client can send them:
INVALID_ARGUMENT naming the field, on unary and streaming RPCs of all three services,
and only after the token is checked. Raw bytes over real loopback servers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.server import activation_service
from sagex.activation.servicer import ActivationServicer
from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.agent.v1 import agent_service_pb2 as gpb
from sagex.api.scoring.v1 import scoring_service_pb2 as spb
from sagex.scoring.config import ScoringConfig
from sagex.scoring.server import running_scoring_server
from sagex.server.lifecycle import running_services
from sagex.server.wire import find_problem
from tests.security.helpers import TOKEN, agent_server, server_options

pytestmark = pytest.mark.asyncio(loop_scope="session")

BAD_UTF8 = b"\xff\xfe"
ACTIVATION = "/sagex.api.activation.v1.ActivationService"


def string_field(number: int, value: bytes) -> bytes:
    """A length-delimited field on the wire: tag, length, bytes."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


async def call(channel: grpc.aio.Channel, path: str, messages: Sequence[bytes], *, client_stream: bool = False,
               server_stream: bool = False, metadata: Any = None) -> grpc.aio.AioRpcError:
    """Send raw bytes; the error the call ends with (the test fails if it succeeds)."""
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}[(client_stream, server_stream)]
    stub = kind(path)  # no serializers: bytes go out as they are
    request: Any = iter(messages) if client_stream else messages[0]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if server_stream:
            async for _ in stub(request, timeout=30, metadata=metadata):
                pass
        else:
            await stub(request, timeout=30, metadata=metadata)
    return info.value


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no google.rpc.Status details: {error.details()}"
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


def assert_invalid(error: grpc.aio.AioRpcError, field: str, *words: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    [(got, description)] = violations(error)
    assert got == field, (got, description)
    for word in words:
        assert word in description, description


# --- the wire walker on its own --------------------------------------------------------


async def test_the_walker_names_nested_and_repeated_fields() -> None:
    request = apb.StreamActivationsRequest(batch_id="b", sae_id="s", texts=["a", "b"]).SerializeToString()
    assert find_problem(apb.StreamActivationsRequest.DESCRIPTOR, request + string_field(3, BAD_UTF8)) \
        .field == "texts[2]"  # type: ignore[union-attr]
    score = spb.ScoreExplanationRequest(scorers=["embedding"]).SerializeToString() + string_field(
        1, string_field(3, BAD_UTF8))
    problem = find_problem(spb.ScoreExplanationRequest.DESCRIPTOR, score)
    assert problem is not None and problem.field == "explanation.text" and "UTF-8" in problem.description
    truncated = find_problem(apb.TokenizeRequest.DESCRIPTOR, b"\x0a\x05ab")
    assert truncated is not None and truncated.field == "texts[0]" and "truncated" in truncated.description
    bad_wire = find_problem(apb.TokenizeRequest.DESCRIPTOR, b"\x0f")
    assert bad_wire is not None and "wire type 7" in bad_wire.description
    # What the parser accepts is no problem: unknown fields, a known field with another wire type.
    for fine in (b"\x0a\x01a" + b"\xf8\x07\x01", b"\x08\x05", apb.TokenizeRequest(texts=["é"]).SerializeToString()):
        apb.TokenizeRequest.FromString(fine)
        assert find_problem(apb.TokenizeRequest.DESCRIPTOR, fine) is None


# --- activation service ----------------------------------------------------------------------


async def test_activation_unary_and_stream_name_the_field(server: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        error = await call(channel, f"{ACTIVATION}/Tokenize", [bytes.fromhex("0a02fffe")])
        assert_invalid(error, "texts[0]", "UTF-8")
        assert "Traceback" not in (error.details() or "") and "DecodeError" not in (error.details() or "")

        error = await call(channel, f"{ACTIVATION}/Tokenize", [b"\x0a\x09short"])
        assert_invalid(error, "texts[0]", "truncated")

        good = apb.StreamActivationsRequest(batch_id="b0", sae_id=EMBEDDED_SAE_ID, texts=["Hello there"],
                                            top_k=apb.TopKSelection(k=2)).SerializeToString()
        error = await call(channel, f"{ACTIVATION}/StreamActivations", [good + bytes.fromhex("1a02fffe")],
                           client_stream=True, server_stream=True)
        assert_invalid(error, "texts[1]", "message 1 of the stream", "UTF-8")

        # Server streaming: a MineExemplarsRequest whose sae_id is not UTF-8.
        error = await call(channel, f"{ACTIVATION}/MineExemplars", [string_field(1, BAD_UTF8)], server_stream=True)
        assert_invalid(error, "sae_id", "UTF-8")


async def test_health_check_with_a_malformed_name_is_invalid_argument(server: Any) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        error = await call(channel, "/grpc.health.v1.Health/Check", [string_field(1, BAD_UTF8)])
        assert_invalid(error, "service", "UTF-8")
        error = await call(channel, "/grpc.health.v1.Health/Watch", [string_field(1, BAD_UTF8)], server_stream=True)
        assert_invalid(error, "service", "UTF-8")


async def test_the_token_is_checked_before_the_request_is_parsed(activation_config: Any, tokens_file: Path
                                                                 ) -> None:
    options = server_options(auth_tokens_file=tokens_file)
    async with running_services([activation_service(ActivationServicer(activation_config))], options) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            for path, stream in ((f"{ACTIVATION}/Tokenize", False), (f"{ACTIVATION}/StreamActivations", True)):
                error = await call(channel, path, [bytes.fromhex("0a02fffe")], client_stream=stream,
                                   server_stream=stream)
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (path, error.code(), error.details())
            # With the token, the same bytes are the caller's mistake, said as such.
            error = await call(channel, f"{ACTIVATION}/Tokenize", [bytes.fromhex("0a02fffe")],
                               metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert_invalid(error, "texts[0]", "UTF-8")


# --- agent and scoring -----------------------------------------------------------------------


async def test_agent_unary_server_stream_and_operations(tmp_path: Path) -> None:
    async with agent_server(tmp_path, server_options()) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            error = await call(channel, "/sagex.api.agent.v1.AgentService/GetExplanation", [string_field(1, BAD_UTF8)])
            assert_invalid(error, "name", "UTF-8", gpb.GetExplanationRequest.DESCRIPTOR.full_name)
            error = await call(channel, "/sagex.api.agent.v1.AgentService/ExplainFeature",
                               [string_field(1, BAD_UTF8)], server_stream=True)
            assert_invalid(error, "sae_id", "UTF-8")
            wait = operations_pb2.WaitOperationRequest(name="operations/x").SerializeToString()
            error = await call(channel, "/google.longrunning.Operations/WaitOperation", [wait[:-3]])
            assert_invalid(error, "name", "truncated")


async def test_scoring_names_a_nested_field(tmp_path: Path) -> None:
    config = ScoringConfig(activation=("127.0.0.1:1",), database=tmp_path / "scoring.sqlite3",
                           server=server_options())
    async with running_scoring_server(config) as (running, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            request = string_field(1, string_field(3, BAD_UTF8))
            error = await call(channel, "/sagex.api.scoring.v1.ScoringService/ScoreExplanation", [request])
            assert_invalid(error, "explanation.text", "UTF-8")
