"""Shared exemplar mining is no feature's time: a batch job whose activation server
must first scan the corpus (for longer than a feature's wall-clock budget) waits
for the index before its features' clocks start, shows the scan's progress in its
metadata, and finishes every feature. Real activation server (fresh cache, a scan
slowed so it lasts long enough), real agent, heuristic policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.mining import ExemplarMiner
from sagex.activation.server import ActivationRuntime, running_activation_server
from sagex.agent.budget import Budget
from sagex.agent.server import running_agent_server
from sagex.sdk import AsyncSage, Options

pytestmark = pytest.mark.asyncio(loop_scope="session")

SAE = EMBEDDED_SAE_ID
BUDGET_S = 10.0
PAUSE_S = 0.5  # per scan batch, one batch at a time: the scan lasts >= batches * PAUSE_S


@pytest_asyncio.fixture(loop_scope="session")
async def slow_mining_server(runtime: Any, activation_config: Any, tmp_path: Any) -> AsyncIterator[tuple[str, Any]]:
    state: dict[str, Any] = {"miner": None, "lock": asyncio.Lock()}

    async def submit(items):  # type: ignore[no-untyped-def]
        progress = state["miner"].progress(runtime.engine.saes[EMBEDDED_SAE_ID], "exemplar")
        if progress is not None and progress.phase == "scanning":  # only the scan is slow, not the probes
            async with state["lock"]:
                await asyncio.sleep(PAUSE_S)
        return await runtime.batcher.submit(items)

    miner = ExemplarMiner(
        submit, runtime.engine.lm.content_ids, activation_config.corpus_dir, tmp_path / "mining", "test-model",
        window_tokens=32, max_tokens=3000, batch_windows=4, special_ids=runtime.engine.lm.special_ids,
    )
    state["miner"] = miner
    config = replace(activation_config, mining_cache_dir=tmp_path / "mining")
    async with running_activation_server(config, ActivationRuntime(runtime.engine, runtime.batcher, miner)) as (
            running, _):
        yield f"127.0.0.1:{running.port}", miner


async def test_a_feature_budget_shorter_than_the_scan_still_completes(
        slow_mining_server: tuple[str, Any], agent_config: Any, token_features: dict[int, str], runtime: Any) -> None:
    address, miner = slow_mining_server
    config = replace(agent_config, activation=(address,), budget=Budget(max_rounds=1, max_seconds=BUDGET_S))
    features = list(token_features)[:2]
    seen = []
    async with running_agent_server(config) as (agent, _):
        async with AsyncSage(activation=None, agent=f"127.0.0.1:{agent.port}", scoring=None) as sage:
            job = await sage.agent.explain_many(SAE, features, Options(policy="heuristic", skip_triage=True,
                                                                        max_seconds=BUDGET_S), concurrency=2)
            progress = job.progress
            while not progress.finished:
                if progress.mining is not None:
                    seen.append(progress.mining)
                await asyncio.sleep(0.2)
                progress = await job.refresh()
            results = await job.result()
    build = miner.progress(runtime.engine.saes[SAE], "exemplar")
    assert -(-build.windows_total // 4) * PAUSE_S > BUDGET_S, "by construction the scan outlasts a feature's budget"
    assert build.scan_seconds > BUDGET_S
    assert progress.done == len(features) and progress.failed == 0
    for ex in results:
        assert not ex.error and ex.stop_reason != "max_seconds", (ex.stop_reason, ex.error)
    scanning = [m for m in seen if m.phase == "SCANNING" and m.tokens_total > 0]
    assert scanning, "the job's metadata showed the scan"
    assert scanning[-1].sae_id == SAE and scanning[-1].split == "exemplar"
    assert any(m.tokens_per_second > 0 and m.eta_seconds is not None for m in scanning)

