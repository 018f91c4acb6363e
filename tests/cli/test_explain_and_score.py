"""`sage explain --watch` and `sage score` as a user runs them (subprocesses),
against real agent and scoring services on loopback, and the SDK's scoring client."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server
from sagex.scoring.config import ScoringConfig
from sagex.scoring.server import running_scoring_server
from sagex.sdk import AsyncSage, Options
from sagex.server.lifecycle import ServerOptions
from tests.agent.conftest import SAE, agent_config  # noqa: F401 - fixture

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def sage_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "sagex.cli.main", *args,
                                                env={**os.environ, **(env or {})},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=600)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest_asyncio.fixture(loop_scope="session")
async def scoring_address(server: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    config = ScoringConfig(activation=(f"127.0.0.1:{server.port}",), default_scorers=("embedding",),
                           database=tmp_path_factory.mktemp("scoring") / "scoring.sqlite3",
                           server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0))
    async with running_scoring_server(config) as (running, _):
        yield f"127.0.0.1:{running.port}"


async def test_explain_watch_prints_progress_and_labels(agent_config: AgentConfig,  # noqa: F811
                                                        token_features: dict[int, str]) -> None:
    features = list(token_features)[:2]
    async with running_agent_server(agent_config) as (agent, _):
        code, out, err = await sage_cli("explain", SAE, ",".join(map(str, features)), "--agent",
                                        f"127.0.0.1:{agent.port}", "--policy", "heuristic", "--watch")
    assert code == 0, err
    assert "operations/" in out and "2 done, 0 failed, 0 remaining" in out
    for f in features:
        line = next(x for x in out.splitlines() if x.strip().startswith(str(f)))
        assert token_features[f] in line.lower()  # the label names the token


async def test_running_features_are_shown_live(agent_config: AgentConfig,  # noqa: F811
                                               token_features: dict[int, str], capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    """The job's metadata lists the features being explained with their state and
    counts while they run (polled fast, so a quick run is still seen), and --watch
    draws one line per running feature."""
    from sagex.cli.explain import _Progress

    features = list(token_features)[:4]
    seen: list[Any] = []
    async with running_agent_server(agent_config) as (agent, _):
        async with AsyncSage(activation=None, agent=f"127.0.0.1:{agent.port}", scoring=None) as sage:
            job = await sage.agent.explain_many(SAE, features, Options(skip_triage=True, max_rounds=2),
                                                concurrency=2)
            progress = job.progress
            while not progress.finished:
                seen.append(progress)
                await asyncio.sleep(0.02)
                progress = await job.refresh()
    assert progress.done == len(features) and progress.running == ()
    running = [f for p in seen for f in p.running]
    assert {f.feature_id for f in running} <= set(features)
    assert any(f.state == "TESTING" and f.probes > 0 and f.round >= 1 and f.hypotheses >= 2 for f in running)
    assert max(len(p.running) for p in seen) <= 2  # the job's concurrency

    draw = _Progress(tty=False)
    for p in seen:
        draw(p)
    lines = capsys.readouterr().out.splitlines()
    assert any(x.startswith("  feature ") and "testing" in x and "probes, round" in x for x in lines)


async def test_score_prints_metrics_with_intervals(scoring_address: str, token_features: dict[int, str]) -> None:
    feature, word = next((f, w) for f, w in token_features.items() if len(w) >= 5)
    code, out, err = await sage_cli("score", SAE, str(feature), f'the word "{word}"', "--scoring", scoring_address)
    assert code == 0, err
    assert out.startswith("embedding   auroc: ") and "[" in out and "(n=" in out
    code, _, err = await sage_cli("score", SAE, "999999", "x", "--scoring", scoring_address)
    assert code != 0 and "out of range" in err


async def test_sdk_scores_through_the_scoring_service(scoring_address: str, token_features: dict[int, str]) -> None:
    feature, word = next((f, w) for f, w in token_features.items() if len(w) >= 5)
    async with AsyncSage(activation=None, agent=None, scoring=scoring_address) as sage:
        [result] = await sage.scoring.score(SAE, feature, f'the word "{word}"', ["embedding"], seed=1)
    auroc = result.metric("auroc")
    assert not result.error and auroc.n > 0 and auroc.ci is not None and auroc.ci[0] <= auroc.value <= auroc.ci[1]


async def test_the_cli_finds_services_through_the_environment(scoring_address: str, agent_config: AgentConfig,  # noqa: F811
                                                               token_features: dict[int, str]) -> None:
    """No address flags: $SAGE_SCORING and $SAGE_AGENT, as `sage up` says to set them."""
    feature, word = next(iter(token_features.items()))
    code, out, err = await sage_cli("score", SAE, str(feature), f'the word "{word}"', "--scorers", "embedding",
                                    env={"SAGE_SCORING": scoring_address})
    assert code == 0, err
    assert "auroc" in out.lower()
    async with running_agent_server(agent_config) as (agent, _):
        code, out, err = await sage_cli("explain", SAE, str(feature), "--policy", "heuristic",
                                        env={"SAGE_AGENT": f"127.0.0.1:{agent.port}"})
    assert code == 0, err
    assert "operations/" in out
