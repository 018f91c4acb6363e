"""The SDK against the real services on loopback: typed results, typed errors
with decoded details, streams that close, job handles with progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server
from sagex.sdk import AsyncSage, InvalidArgumentError, NotFoundError, Options, Sage, UnavailableError
from sagex.sdk._channel import ChannelConfig
from tests.agent.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def addresses(server: Any, agent_config: AgentConfig) -> AsyncIterator[tuple[str, str]]:
    async with running_agent_server(agent_config) as (agent, _):
        yield f"127.0.0.1:{server.port}", f"127.0.0.1:{agent.port}"


async def test_async_client_end_to_end(addresses: tuple[str, str], token_features: dict[int, str]) -> None:
    feature, token = next(iter(token_features.items()))
    async with AsyncSage(*addresses) as sage:
        info = await sage.activation.model_info()
        assert info.loaded_layers == 4 and SAE in [s.id for s in info.saes]
        [acts] = await sage.activation.activations(SAE, [f"They said{token} twice."], [feature])
        assert len(acts.tokens) == len(acts.activations[feature]) and acts.max(feature) > 0
        [ex] = await sage.activation.exemplars(SAE, [feature], top_k=3)
        assert len(ex.top) == 3 and ex.top[0].max_activation == pytest.approx(float(np.max(ex.top[0].values[1:])))

        events = [e async for e in sage.agent.stream(SAE, feature, Options(skip_triage=True, max_rounds=2))]
        assert events[0].state == "TRIAGE" and events[-1].explanation is not None
        assert any(e.probe is not None for e in events) and any(e.hypothesis is not None for e in events)
        explanation = events[-1].explanation
        assert token in (explanation.description + " ".join(lb.name for lb in explanation.labels)).lower()
        stored = await sage.agent.get(explanation.name)
        assert stored == explanation and stored.raw == explanation.raw

        seen: list[int] = []
        four = list(token_features)[:4]
        job = await sage.agent.explain_many(SAE, four, concurrency=2)
        results = await job.result()
        progress = await job.wait(on_progress=lambda p: seen.append(p.done))
        assert progress.finished and progress.done + progress.failed == len(four)
        assert [e.feature_id for e in results] == four
        listed = [e async for e in sage.agent.list(SAE, four, page_size=2)]
        assert {e.name for e in results} <= {e.name for e in listed}


async def test_typed_errors_carry_the_details(addresses: tuple[str, str]) -> None:
    async with AsyncSage(*addresses) as sage:
        with pytest.raises(InvalidArgumentError) as bad:
            await sage.agent.explain(SAE, 10**7)
        assert bad.value.field_violations[0][0] == "feature_id" and bad.value.request_id
        with pytest.raises(NotFoundError) as missing:
            await sage.agent.get(f"explanations/{SAE}/1/nope")
        assert missing.value.resource == ("explanation", f"explanations/{SAE}/1/nope")
    async with AsyncSage(activation="127.0.0.1:1", agent=None, config=ChannelConfig(timeout_s=2, max_retries=0)) as s:
        with pytest.raises(UnavailableError):
            await s.activation.model_info()
        with pytest.raises(ValueError, match="no agent address"):
            await s.agent.get("x")


async def test_sync_client_and_early_stream_close(addresses: tuple[str, str], token_features: dict[int, str]) -> None:
    feature = next(iter(token_features))

    def work() -> tuple[str, int, list[str]]:
        with Sage(*addresses) as sage:
            stream = sage.agent.stream(SAE, feature, Options(skip_triage=True))
            first = next(stream)
            stream.close()  # cancels the run on the server
            job = sage.agent.explain_many(SAE, [feature], request_id="sdk-sync")
            again = sage.agent.explain_many(SAE, [feature], request_id="sdk-sync")
            [ex] = job.result(timeout=120)
            return first.state or "", len(ex.probes), [job.name, again.name]

    state, probes, names = await asyncio.to_thread(work)
    assert state == "TRIAGE" and probes > 0 and names[0] == names[1]


async def test_a_bad_batch_fails_alone_and_statistics_are_typed(server: Any) -> None:
    address = f"127.0.0.1:{server.port}"
    async with AsyncSage(activation=address, agent=None, scoring=None) as sage:
        good, bad, again = await sage.activation.activations_many(
            SAE, [["In the beginning"], ["x" * 30_000], ["In the beginning"]], [3880])
        assert isinstance(bad, InvalidArgumentError) and bad.field_violations[0][0] == "texts[0]"
        assert isinstance(good, list) and isinstance(again, list)
        assert good[0].tokens == again[0].tokens and np.array_equal(good[0].activations[3880],
                                                                   again[0].activations[3880])
        [text] = await sage.activation.activations(SAE, ["café 🎉 "], [3880])
        assert "".join(text.tokens) == "café 🎉 " and [text.text[s:e] for s, e in text.spans] == list(text.tokens)
        with pytest.raises(NotFoundError):
            await sage.activation.activations(SAE.replace("topk", "nope"), ["hi"], [1])
        stats = await sage.activation.statistics(SAE, [3880, 7])
    assert sorted(stats) == [7, 3880] and stats[3880].tokens_scanned > 0 and stats[3880].windows_scanned > 0
    assert 0 <= stats[3880].firing_frequency <= stats[3880].window_frequency <= 1
    assert stats[3880].max_activation >= stats[3880].mean_active_activation >= 0

    def sync() -> tuple[object, dict[int, Any]]:
        with Sage(activation=address, agent=None, scoring=None) as s:
            return s.activation.activations_many(SAE, [["ok"], []], [1])[1], s.activation.statistics(SAE, [1])

    empty, one = await asyncio.to_thread(sync)
    assert isinstance(empty, InvalidArgumentError) and list(one) == [1]
