"""Prometheus metrics scraped over HTTP from real servers: RPC counts by method
and code, latencies, in-flight calls, the activation batcher's queue and
tokens, and LLM tokens and cost. The registry is per process and shared by
every server in it, so each test compares a scrape before and after."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.batcher import DynamicBatcher
from sagex.activation.config import ActivationConfig
from sagex.activation.encode import SparseRows, TopK
from sagex.activation.engine import WorkItem
from sagex.activation.server import running_activation_server
from sagex.llm import LLMBackend, LLMConfig, LLMUnavailable
from sagex.sdk import AsyncSage, ChannelConfig, NotFoundError, UnauthenticatedError
from sagex.server.metrics import MetricsEndpoint
from tests.fakes.openai_server import FakeOpenAI, Reply, scripted
from tests.security.helpers import GATE_METHOD, TOKEN, Gate, agent_server, free_port, sample, scrape, server_options

AGENT = "sagex.api.agent.v1.AgentService"


def handled(samples: dict, method: str, code: str, service: str = AGENT, kind: str = "unary") -> float:
    return sample(samples, "grpc_server_handled_total", grpc_type=kind, grpc_service=service, grpc_method=method,
                  grpc_code=code)


def agent_sdk(port: int, token: str | None = TOKEN) -> AsyncSage:
    return AsyncSage(activation=None, agent=f"127.0.0.1:{port}", scoring=None,
                     config=ChannelConfig(token=token, max_retries=0, timeout_s=10))


async def test_metrics_are_off_unless_a_port_is_given(tmp_path: Path) -> None:
    async with agent_server(tmp_path, server_options()) as running:
        assert running.metrics is None


async def test_rpcs_are_counted_by_method_and_code_and_timed(tmp_path: Path, tokens_file: Path) -> None:
    gate = Gate()
    options = server_options(metrics_port=free_port(), auth_tokens_file=tokens_file)
    async with agent_server(tmp_path, options, extra=(gate.service(),)) as running:
        assert running.metrics is not None and running.metrics.port == options.metrics_port
        before = scrape(options.metrics_port)
        async with agent_sdk(running.port) as sage:
            for _ in range(3):
                assert [e async for e in sage.agent.list()] == []
            with pytest.raises(NotFoundError):
                await sage.agent.get("explanations/missing")
        async with agent_sdk(running.port, token=None) as sage:
            with pytest.raises(UnauthenticatedError):  # refusals are counted too
                [e async for e in sage.agent.list()]
        after = scrape(options.metrics_port)

        assert handled(after, "ListExplanations", "OK") - handled(before, "ListExplanations", "OK") == 3
        assert handled(after, "GetExplanation", "NOT_FOUND") - handled(before, "GetExplanation", "NOT_FOUND") == 1
        assert (handled(after, "ListExplanations", "UNAUTHENTICATED")
                - handled(before, "ListExplanations", "UNAUTHENTICATED")) == 1
        labels = {"grpc_type": "unary", "grpc_service": AGENT, "grpc_method": "ListExplanations"}
        for name in ("grpc_server_started_total", "grpc_server_handling_seconds_count"):
            assert sample(after, name, **labels) - sample(before, name, **labels) == 4
        assert sample(after, "grpc_server_handling_seconds_sum", **labels) > sample(
            before, "grpc_server_handling_seconds_sum", **labels)
        assert sample(after, "grpc_server_in_flight", **labels) == 0

        # A call held in its handler is in flight until it ends.
        gate_labels = {"grpc_type": "unary", "grpc_service": "sagex.test.Gate", "grpc_method": "Hold"}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            held = asyncio.ensure_future(channel.unary_unary(GATE_METHOD)(
                b"x", metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=30))
            await gate.entered.wait()
            assert sample(await asyncio.to_thread(scrape, options.metrics_port), "grpc_server_in_flight",
                          **gate_labels) == 1
            gate.release()
            assert await held == b"x"
        assert sample(await asyncio.to_thread(scrape, options.metrics_port), "grpc_server_in_flight",
                      **gate_labels) == 0


async def test_health_calls_are_counted(tmp_path: Path) -> None:
    options = server_options(metrics_port=free_port())
    async with agent_server(tmp_path, options) as running:
        before = scrape(options.metrics_port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        after = scrape(options.metrics_port)
    service = "grpc.health.v1.Health"
    assert handled(after, "Check", "OK", service) - handled(before, "Check", "OK", service) == 1


async def test_activation_counts_tokens_and_its_stream(activation_config: ActivationConfig, runtime: Any) -> None:
    options = replace(activation_config.server, metrics_port=free_port())
    texts = ["The quick brown fox jumps over the lazy dog.", "A second, shorter text."]
    async with running_activation_server(replace(activation_config, server=options), runtime) as (running, _):
        before = scrape(options.metrics_port)
        config = ChannelConfig(max_retries=0, timeout_s=30)
        async with AsyncSage(activation=f"127.0.0.1:{running.port}", agent=None, scoring=None, config=config) as sage:
            results = await sage.activation.activations(EMBEDDED_SAE_ID, texts, [1, 2])
        after = scrape(options.metrics_port)
    tokens = sum(len(r.tokens) for r in results)
    assert sample(after, "sagex_activation_tokens_total") - sample(before, "sagex_activation_tokens_total") == tokens
    assert sample(after, "sagex_activation_texts_total") - sample(before, "sagex_activation_texts_total") == 2
    batches = "sagex_activation_batch_seconds_count"
    assert sample(after, batches) > sample(before, batches)
    assert sample(after, "sagex_activation_queue_texts") == 0
    service = "sagex.api.activation.v1.ActivationService"
    assert (handled(after, "StreamActivations", "OK", service, "bidi_stream")
            - handled(before, "StreamActivations", "OK", service, "bidi_stream")) == 1


async def test_queue_depth_is_the_number_of_texts_waiting() -> None:
    gate = threading.Event()

    def run(items: Any) -> list[SparseRows]:
        gate.wait(timeout=30)
        return [SparseRows(torch.arange(len(it.ids) + 1), torch.zeros(len(it.ids), dtype=torch.int32),
                           torch.ones(len(it.ids))) for it in items]

    endpoint = MetricsEndpoint("127.0.0.1", free_port())
    batcher = DynamicBatcher(run, token_budget=4, max_queue=100)
    batcher.start()
    try:
        before = await asyncio.to_thread(scrape, endpoint.port)
        first = asyncio.ensure_future(batcher.submit([WorkItem((1, 2, 3, 4), "sae", TopK(1))]))
        await asyncio.sleep(0)  # submit() enqueues
        while batcher.depth:  # the worker takes the first text and blocks on it
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(batcher.submit([WorkItem((5, 6), "sae", TopK(1))] * 3))
        await asyncio.sleep(0.05)
        during = await asyncio.to_thread(scrape, endpoint.port)
        gate.set()
        await asyncio.gather(first, waiting)
        after = await asyncio.to_thread(scrape, endpoint.port)
    finally:
        gate.set()
        batcher.close()
        endpoint.close()
    assert sample(during, "sagex_activation_queue_texts") - sample(before, "sagex_activation_queue_texts") == 3
    assert sample(after, "sagex_activation_queue_texts") == sample(before, "sagex_activation_queue_texts")
    assert sample(after, "sagex_activation_tokens_total") - sample(before, "sagex_activation_tokens_total") == 4 + 3 * 2


async def test_llm_tokens_and_cost_are_counted(tmp_path: Path) -> None:
    """The agent's (and scoring's) LLM backend counts what the endpoint reports,
    the same numbers its usage accounting gives the caller."""
    model = "metrics-test-model"
    replies = scripted(Reply("one", prompt_tokens=11, completion_tokens=7),
                       Reply("two", prompt_tokens=5, completion_tokens=3),
                       Reply(status=400, error="bad request"))
    options = server_options(metrics_port=free_port())
    async with agent_server(tmp_path, options):
        with FakeOpenAI(replies) as fake:
            llm = LLMBackend(LLMConfig(base_url=fake.base_url, model=model, max_retries=0, prompt_usd_per_mtok=2.0,
                                       completion_usd_per_mtok=10.0, cache_dir=tmp_path / "llm-cache"))
            before = await asyncio.to_thread(scrape, options.metrics_port)
            first = await llm.complete([{"role": "user", "content": "first"}])
            second = await llm.complete([{"role": "user", "content": "second"}])
            replay = await llm.complete([{"role": "user", "content": "first"}])  # from the cache
            with pytest.raises(LLMUnavailable):
                await llm.complete([{"role": "user", "content": "third"}])
            await llm.aclose()
            after = await asyncio.to_thread(scrape, options.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, model=model, **labels) - sample(before, name, model=model, **labels)

    assert replay.cached
    usage = first.usage + second.usage
    assert delta("sagex_llm_prompt_tokens_total") == usage.prompt_tokens == 16
    assert delta("sagex_llm_completion_tokens_total") == usage.completion_tokens == 10
    assert delta("sagex_llm_cost_usd_total") == pytest.approx(usage.cost_usd) == pytest.approx((16 * 2 + 10 * 10) / 1e6)
    assert [delta("sagex_llm_requests_total", result=r) for r in ("ok", "cached", "error")] == [2, 1, 1]
