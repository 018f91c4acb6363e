"""`sage eval` against a real scoring service (scripted agent and LLM): the table,
the Markdown and the JSON; and its argument checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sagex.cli.evaluate import parse_features, run_eval
from tests.scoring.test_service import Client, agent_address, client, fake_llm  # noqa: F401 - fixtures


def test_feature_lists_and_ranges() -> None:
    assert parse_features(["3", "1,5", "7-9", "5"]) == [3, 1, 5, 7, 8, 9]
    for bad in (["x"], ["9-7"], [","], ["1-"]):
        with pytest.raises(ValueError):
            parse_features(bad)


@pytest.mark.asyncio(loop_scope="session")
async def test_eval_prints_and_writes_the_comparison(client: Client, token_features: dict[int, str],  # noqa: F811
                                                     dead_feature: int, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    features = [*list(token_features)[:3], dead_feature]
    code = await asyncio.to_thread(run_eval, client.address, "smollm2-135m-l3-topk32", features,
                                   ["sage", "single_pass"], ["detection"], 0, tmp_path)
    assert code == 0
    table = (tmp_path / "eval.md").read_text()
    assert "| detection.balanced_accuracy |" in table and "| sage - single_pass |" in table
    assert f"feature {dead_feature}" in table  # the skipped feature and its reason
    data = json.loads((tmp_path / "eval.json").read_text())
    assert {s["explainer"] for s in data["summaries"]} == {"sage", "single_pass"}
    assert "4/4 features explained and scored" in capsys.readouterr().out
