"""Token authentication on real servers over loopback: deny by default for every
method (services, operations, reflection, unknown methods), health exempt,
tokens compared in constant time, and the SDK as the client."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sagex.api.agent.v1 import agent_service_pb2
from sagex.scoring.config import ScoringConfig
from sagex.scoring.server import running_scoring_server
from sagex.sdk import AsyncSage, ChannelConfig, UnauthenticatedError
from sagex.server import auth
from sagex.server.lifecycle import RunningServer, start_server
from tests.security.helpers import OTHER_TOKEN, TOKEN, agent_server, server_options

AGENT_SERVICE = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"]
OPERATIONS = operations_pb2.DESCRIPTOR.services_by_name["Operations"]


@pytest_asyncio.fixture(loop_scope="session")
async def agent(tmp_path: Path, tokens_file: Path) -> AsyncIterator[RunningServer]:
    async with agent_server(tmp_path, server_options(auth_tokens_file=tokens_file)) as running:
        yield running


def sdk(running: RunningServer, **config: Any) -> AsyncSage:
    return AsyncSage(activation=None, agent=f"127.0.0.1:{running.port}", scoring=None,
                     config=ChannelConfig(max_retries=0, timeout_s=10, **config))


async def list_explanations(sage: AsyncSage) -> list[object]:
    return [e async for e in sage.agent.list()]


async def test_no_token_is_unauthenticated_and_says_how_to_send_one(agent: RunningServer) -> None:
    async with sdk(agent) as sage:
        with pytest.raises(UnauthenticatedError) as err:
            await list_explanations(sage)
    assert "authorization: Bearer <token>" in err.value.message
    assert "SAGE_TOKEN" in err.value.message


async def test_wrong_token_is_unauthenticated_and_reveals_nothing(agent: RunningServer) -> None:
    async with sdk(agent, token="not-a-token-anyone-was-given") as sage:
        with pytest.raises(UnauthenticatedError) as err:
            await list_explanations(sage)
    assert err.value.message == auth.REJECTED
    assert TOKEN not in str(err.value) and OTHER_TOKEN not in str(err.value)


async def test_malformed_authorization_is_unauthenticated(agent: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await operations_pb2_grpc.OperationsStub(channel).ListOperations(
                operations_pb2.ListOperationsRequest(), metadata=(("authorization", f"Basic {TOKEN}"),), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in (err.value.details() or "")


async def test_valid_tokens_are_accepted(agent: RunningServer) -> None:
    for token in (TOKEN, OTHER_TOKEN):  # every line of the tokens file
        async with sdk(agent, token=token) as sage:
            assert await list_explanations(sage) == []


async def test_sdk_sends_the_token_from_the_environment(agent: RunningServer, monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("SAGE_TOKEN", OTHER_TOKEN)
    async with sdk(agent) as sage:
        assert await list_explanations(sage) == []


async def _call(channel: grpc.aio.Channel, method: str, client_streaming: bool, server_streaming: bool,
                metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    """Call ``method`` with an empty message of any shape; the status it ends with."""
    kwargs: dict[str, Any] = {"metadata": metadata, "timeout": 10}
    try:
        if client_streaming and server_streaming:
            async for _ in channel.stream_stream(method)(iter([b""]), **kwargs):
                pass
        elif server_streaming:
            async for _ in channel.unary_stream(method)(b"", **kwargs):
                pass
        elif client_streaming:
            await channel.stream_unary(method)(iter([b""]), **kwargs)
        else:
            await channel.unary_unary(method)(b"", **kwargs)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_every_method_is_denied_without_a_token(agent: RunningServer) -> None:
    methods = [(f"/{svc.full_name}/{m.name}", m.client_streaming, m.server_streaming)
               for svc in (AGENT_SERVICE, OPERATIONS) for m in svc.methods]
    methods += [("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True, True),
                ("/no.such.Service/Method", False, False)]  # deny by default: unknown methods too
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel:
        codes = {method: await _call(channel, method, cs, ss) for method, cs, ss in methods}
        assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes
        # With a token the same calls reach their handlers (bad requests, but past auth).
        bearer = (("authorization", f"Bearer {TOKEN}"),)
        authed = {method: await _call(channel, method, cs, ss, bearer) for method, cs, ss in methods}
        assert grpc.StatusCode.UNAUTHENTICATED not in authed.values(), authed
        assert authed["/no.such.Service/Method"] == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_needs_a_token(agent: RunningServer) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.ServerReflectionInfo(iter([request]), timeout=10):
                pass
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        responses = [r async for r in stub.ServerReflectionInfo(
            iter([request]), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert AGENT_SERVICE.full_name in names and "google.longrunning.Operations" in names


async def test_health_needs_no_token(agent: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", AGENT_SERVICE.full_name):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        first = await watch.read()
        watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def test_tokens_are_compared_in_constant_time(agent: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every accepted digest goes through hmac.compare_digest, for a wrong token and
    for a right one alike (no early exit, no == on secrets)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    for token, accepted in ((TOKEN, True), ("a-wrong-token-of-some-length", False)):
        calls.clear()
        async with sdk(agent, token=token) as sage:
            if accepted:
                await list_explanations(sage)
            else:
                with pytest.raises(UnauthenticatedError):
                    await list_explanations(sage)
        assert len(calls) == 2, "one comparison per accepted token, whatever the outcome"
        assert all(len(a) == len(b) == 32 for a, b in calls), "fixed-length digests, never the raw tokens"
        assert TOKEN.encode() not in {x for pair in calls for x in pair}


async def test_scoring_is_protected_too(tmp_path: Path, tokens_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEX_CACHE_DIR", str(tmp_path))  # its operations database
    config = ScoringConfig(activation=("127.0.0.1:1",), server=server_options(auth_tokens_file=tokens_file))
    async with running_scoring_server(config) as (running, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            ops = operations_pb2_grpc.OperationsStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ops.ListOperations(operations_pb2.ListOperationsRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            listed = await ops.ListOperations(operations_pb2.ListOperationsRequest(),
                                              metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
    assert list(listed.operations) == []


# --- configuration -----------------------------------------------------------------


def test_tokens_from_file_and_environment(tokens_file: Path) -> None:
    env_token = "from-the-environment-0123456789"
    tokens = auth.load_tokens(tokens_file, {"SAGE_AUTH_TOKENS": f"{env_token}, another-env-token-abcdef"})
    assert len(tokens) == 4
    assert tokens.accepts(TOKEN) and tokens.accepts(env_token) and not tokens.accepts("# accepted callers")
    assert len(auth.load_tokens(None, {})) == 0


@pytest.mark.parametrize(("content", "problem"), [
    ("short\n", "line 1: a token must be at least 16 characters"),
    ("# only a comment\n\n", "holds no token"),
    ("has a space in it 0123456789\n", "printable ASCII without spaces"),
])
def test_bad_token_files_are_refused_without_echoing_them(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as err:
        auth.load_tokens(path, {})
    assert "short" not in str(err.value).replace("shorter", "")


def test_missing_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="auth_tokens_file: cannot read"):
        auth.load_tokens(tmp_path / "absent", {})


async def test_open_server_on_a_public_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="refusing to serve 0.0.0.0:0 without authentication"):
        await start_server([], server_options(host="0.0.0.0"))


@pytest.mark.parametrize(("host", "tokens", "mtls", "allow", "mode"), [
    ("127.0.0.1", 0, False, False, "none"),  # make demo
    ("localhost", 0, False, False, "none"),
    ("::1", 0, False, False, "none"),
    ("0.0.0.0", 1, False, False, "tokens"),
    ("0.0.0.0", 0, True, False, "mtls"),
    ("10.0.0.5", 1, True, False, "tokens+mtls"),
    ("0.0.0.0", 0, False, True, "none"),  # explicitly allowed, logged as a warning
])
def test_exposure_policy(host: str, tokens: int, mtls: bool, allow: bool, mode: str) -> None:
    accepted = auth.TokenSet([TOKEN] * tokens)
    assert auth.check_exposure(host, 1, accepted, mtls, allow) == mode
