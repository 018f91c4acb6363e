"""Shared exemplar mining is no feature's time: a batch job whose activation server
must first scan the corpus (for longer than a feature's wall-clock budget) waits
for the index before its features' clocks start, shows the scan's progress in its
metadata, and finishes every feature. Real activation server (fresh cache, a scan
slowed so it lasts long enough), real agent, heuristic policy."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.agent.budget import Budget
from sagex.agent.server import running_agent_server
from sagex.sdk import AsyncSage, Options

pytestmark = pytest.mark.asyncio(loop_scope="session")

SAE = EMBEDDED_SAE_ID
BUDGET_S = 10.0
PAUSE_S = 0.5  # per scan batch, one batch at a time: the scan lasts >= batches * PAUSE_S


async def test_a_feature_budget_shorter_than_the_scan_still_completes(
        slow_mining: Any, agent_config: Any, token_features: dict[int, str], runtime: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    from sagex.cli.explain import _Progress

    features = list(token_features)[:2]
    seen = []
    async with slow_mining(PAUSE_S) as activation, running_agent_server(
            replace(agent_config, activation=(activation.address,), budget=Budget(max_rounds=1, max_seconds=BUDGET_S))
    ) as (agent, _):
        async with AsyncSage(activation=None, agent=f"127.0.0.1:{agent.port}", scoring=None) as sage:
            job = await sage.agent.explain_many(SAE, features, Options(policy="heuristic", skip_triage=True,
                                                                        max_seconds=BUDGET_S), concurrency=2)
            progress = job.progress
            while not progress.finished:
                if progress.mining is not None:
                    seen.append(progress)
                await asyncio.sleep(0.2)
                progress = await job.refresh()
            results = await job.result()
    build = activation.progress(runtime)
    assert -(-build.windows_total // 4) * PAUSE_S > BUDGET_S, "by construction the scan outlasts a feature's budget"
    assert build.scan_seconds > BUDGET_S
    assert progress.done == len(features) and progress.failed == 0
    for ex in results:
        assert not ex.error and ex.stop_reason != "max_seconds", (ex.stop_reason, ex.error)
    scanning = [p.mining for p in seen if p.mining.phase == "SCANNING" and p.mining.tokens_total > 0]
    assert scanning, "the job's metadata showed the scan"
    assert scanning[-1].sae_id == SAE and scanning[-1].split == "exemplar"
    assert any(m.tokens_per_second > 0 and m.eta_seconds is not None for m in scanning)


    # `sage explain --watch` draws the scan under the job's bar.
    draw = _Progress(tty=False)
    for p in seen:
        draw(p)
    out = capsys.readouterr().out
    assert f"  mining {SAE} / exemplar split: [" in out and "tok/s, ETA " in out
