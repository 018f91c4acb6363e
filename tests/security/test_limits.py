"""Each limit breach gets its status and a message that says what happened.

Already covered elsewhere and not repeated: activation StreamActivations limits
(texts per batch, characters, tokens, feature ids, unknown SAE, oversized
message; tests/activation/test_validation.py), the batcher's full queue
(tests/activation/test_batcher.py), unknown SAEs at the agent and scoring
services (tests/agent/test_explain.py, tests/scoring/test_service.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.config import ActivationConfig
from sagex.agent.config import AgentConfig
from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.scoring.config import ScoringConfig
from sagex.scoring.server import running_scoring_server
from sagex.sdk import AsyncSage, ChannelConfig, InvalidArgumentError, NotFoundError, ResourceExhaustedError
from tests.security.helpers import GATE_METHOD, Gate, agent_server, server_options


def sdk(agent: Any = None, scoring: Any = None, activation: Any = None) -> AsyncSage:
    def address(running: Any) -> str | None:
        return None if running is None else f"127.0.0.1:{running.port}"

    return AsyncSage(activation=address(activation), agent=address(agent), scoring=address(scoring),
                     config=ChannelConfig(max_retries=0, timeout_s=10))


# --- message size (every service: ServerOptions.max_message_bytes) -------------------


async def test_oversized_message_to_the_agent_is_resource_exhausted(tmp_path: Path) -> None:
    async with agent_server(tmp_path, server_options(max_message_bytes=4096)) as running:
        async with sdk(agent=running) as sage:
            assert [e async for e in sage.agent.list(features=range(100))] == []  # small: fine
            with pytest.raises(ResourceExhaustedError, match="larger than max"):
                [e async for e in sage.agent.list(features=range(100_000, 103_000))]


async def test_oversized_message_to_scoring_is_resource_exhausted(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEX_CACHE_DIR", str(tmp_path))  # its operations database
    config = ScoringConfig(activation=("127.0.0.1:1",), server=server_options(max_message_bytes=4096))
    async with running_scoring_server(config) as (running, _):
        async with sdk(scoring=running) as sage:
            with pytest.raises(ResourceExhaustedError, match=r"larger than max \(\d+ vs. 4096\)"):
                await sage.scoring.score(EMBEDDED_SAE_ID, 1, "x" * 10_000)


# --- concurrent calls (every service: ServerOptions.max_concurrent_rpcs) ------------


async def test_too_many_concurrent_calls_is_resource_exhausted_with_retry_info(tmp_path: Path) -> None:
    gate = Gate()
    options = server_options(max_concurrent_rpcs=2)
    async with agent_server(tmp_path, options, extra=(gate.service(),)) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel, sdk(agent=running) as sage:
            hold = channel.unary_unary(GATE_METHOD)
            held = [asyncio.ensure_future(hold(b"a", timeout=30)), asyncio.ensure_future(hold(b"b", timeout=30))]
            await gate.entered.wait()
            await asyncio.sleep(0.1)  # both are in their handlers now

            with pytest.raises(ResourceExhaustedError) as err:
                [e async for e in sage.agent.list()]
            assert "limit of 2 concurrent calls (max_concurrent_rpcs)" in err.value.message
            assert err.value.retry_after_s is not None and err.value.retry_after_s > 0
            with pytest.raises(grpc.aio.AioRpcError) as raw:
                await hold(b"c", timeout=10)
            assert raw.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = rpc_status.from_call(raw.value)
            assert status is not None and status.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)

            # Health is not counted: a busy server still answers its probes.
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            gate.release()
            assert await asyncio.gather(*held) == [b"a", b"b"]
            assert [e async for e in sage.agent.list()] == []  # slots are given back


def test_limits_are_configurable_for_every_service(tmp_path: Path) -> None:
    """The [<service>.server] table of each service's TOML file carries the limits,
    auth, TLS and metrics settings."""
    for service, config_class in (("activation", ActivationConfig), ("agent", AgentConfig),
                                  ("scoring", ScoringConfig)):
        path = tmp_path / f"{service}.toml"
        path.write_text(f"[{service}.server]\nmax_message_bytes = 65536\nmax_concurrent_rpcs = 8\n"
                        f'auth_tokens_file = "/run/secrets/sage-tokens"\nmetrics_port = 9100\n'
                        f'tls_cert_file = "/tls/tls.crt"\ntls_key_file = "/tls/tls.key"\n')
        server = config_class.from_toml(path).server
        assert (server.max_message_bytes, server.max_concurrent_rpcs, server.metrics_port) == (65536, 8, 9100)
        assert server.auth_tokens_file == Path("/run/secrets/sage-tokens") and server.tls


@pytest.mark.parametrize(("changes", "problem"), [
    ({"max_concurrent_rpcs": 0}, "max_concurrent_rpcs: must be at least 1"),
    ({"max_message_bytes": 10}, "max_message_bytes: 10 is below 1024"),
    ({"metrics_port": 70000}, "metrics_port: 70000 is outside"),
    ({"port": 9000, "metrics_port": 9000}, "metrics_port: must differ from port"),
])
def test_bad_limits_are_refused(changes: dict[str, int], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        server_options(**changes)


# --- activation requests: the gaps left by tests/activation/test_validation.py ------


async def test_mining_an_sae_that_is_not_allowlisted_is_not_found(server: Any) -> None:
    async with sdk(activation=server) as sage:
        with pytest.raises(NotFoundError) as err:
            await sage.activation.exemplars("../../etc/passwd", [1])
    assert EMBEDDED_SAE_ID in err.value.message, "the message lists the SAEs that are served"


async def test_tokenize_limits_are_invalid_argument(stub: Any) -> None:
    for texts, field, hint in ((["ok"] * 257, "texts", "at most 256"), (["x" * 20_001], "texts[0]", "limit is 20000")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Tokenize(apb.TokenizeRequest(texts=texts))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details() and hint in err.value.details()


async def test_too_many_pretokenized_prompts_is_invalid_argument(server: Any, stub: Any) -> None:
    request = apb.StreamActivationsRequest(batch_id="b", sae_id=EMBEDDED_SAE_ID, top_k=apb.TopKSelection(k=1),
                                           token_ids=[apb.TokenIds(ids=[1, 2])] * 257)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.StreamActivations(iter([request])):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "token_ids" in err.value.details() and "at most 256" in err.value.details()


async def test_sdk_reports_too_many_texts_with_the_field(server: Any) -> None:
    async with sdk(activation=server) as sage:
        with pytest.raises(InvalidArgumentError) as err:
            await sage.activation.activations(EMBEDDED_SAE_ID, ["ok"] * 257, [1])
    assert dict(err.value.field_violations)["texts"].startswith("257 texts; send at most 256")


def test_error_statuses_stay_small_enough_to_deliver() -> None:
    """Found by fuzzing: errors that echoed huge inputs (or listed 5,000 bad texts)
    exceeded the clients' 8-16 KiB trailer limit and arrived as a transport error."""
    from sagex.server.errors import FieldViolation, InvalidArgument, NotFound

    huge = "\U0001f642" * 20_000
    for error in (InvalidArgument([FieldViolation(f"texts[{i}]", huge) for i in range(5_000)]),
                  NotFound("operation", huge, "it was deleted")):
        status = error.to_status()
        size = sum(len(k) + len(v) for k, v in status.trailing_metadata) + len(status.details.encode())
        assert size < 8192, (type(error).__name__, size)
        assert status.details.endswith(" ...") or "characters)" in status.details
