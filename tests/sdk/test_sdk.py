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
