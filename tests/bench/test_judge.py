"""The offline judge against hand labels, the LLM judge over a real HTTP socket
(a fake OpenAI-compatible server), and an unreachable judge endpoint."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from sagex.activation.planted.registry import select
from sagex.bench.judge import LLMJudge, OfflineJudge, Target, agreement, flags_noise, judged_text
from sagex.bench.planted import BenchError, make_judge
from sagex.bench.stats import wilson
from tests.fakes.openai_server import FakeOpenAI

LABELS = Path(__file__).with_name("judge_labels.jsonl")


def _labelled() -> list[tuple[str, Target, bool]]:
    concepts = {c.name: c for c in select("all")}
    rows = [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]
    return [(r["explanation"], Target(r["concept"], concepts[r["concept"]].description,
                                      concepts[r["concept"]].key_terms), bool(r["names_it"])) for r in rows]


def test_offline_judge_agrees_with_the_hand_labels() -> None:
    labelled = _labelled()
    assert len(labelled) >= 40 and sum(y for *_, y in labelled) >= 15 and sum(not y for *_, y in labelled) >= 15
    result = agreement(OfflineJudge(), labelled)
    print(f"offline judge agreement with {LABELS.name}: {result.agree}/{result.n} = {result.rate:.2f} "
          f"(false yes {result.false_yes}, false no {result.false_no})")
    assert result.rate >= 0.9
    assert result.false_yes <= 1  # a lenient judge would inflate recovery


def test_word_lists_and_cues_are_not_the_concept() -> None:
    month = next(c for c in select("dev") if c.name == "month_name")
    target = Target(month.name, month.description, month.key_terms)
    [listing, category] = OfflineJudge().judge([
        (judged_text([("words like 'March', 'May'", "Fires on a family of related words ('March', 'May')")], ""),
         target),
        (judged_text([("months", "names of calendar months")], "ignored when there are labels"), target)])
    assert not listing.names_it and category.names_it


def test_a_named_word_is_read_but_example_words_are_not() -> None:
    after_and = next(c for c in select("dev3") if c.name == "after_and")
    target = Target(after_and.name, after_and.description, after_and.key_terms)
    named, examples = OfflineJudge().judge([
        (judged_text([("tokens right after the word 'and'", "Fires on tokens right after the word 'and'.")], ""),
         target),
        (judged_text([("tokens after 'and'", "Fires on ' the' and ' a' after 'and', 'or'")], ""), target)])
    assert named.names_it and not examples.names_it


def test_noise_flags() -> None:
    assert flags_noise([], "Inconclusive: no hypothesis survived its probes", failed=False)
    assert flags_noise([("a", "b"), ("c", "d")], "Polysemantic: 2 distinct behaviours.", failed=False)
    assert not flags_noise([("token 'x'", "Fires on the token 'x'")], "Fires on the token 'x'.", failed=False)
    assert not flags_noise([], "", failed=True)


def test_wilson_interval() -> None:
    low, high = wilson(1, 10)
    assert 0.017 < low < 0.019 and 0.40 < high < 0.41  # textbook values for 1/10
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(10, 10)[1] == 1.0


def test_llm_judge_asks_the_endpoint_with_the_repo_prompt() -> None:
    def handler(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        return "yes" if "calendar month" in prompt and "Explanation: month names" in prompt else "no"

    with FakeOpenAI(handler) as fake:
        judge = make_judge("llm", fake.base_url, "fake-model")  # checks the endpoint once
        verdicts = judge.judge([("month names", Target("month_name", "The name of a calendar month.")),
                                ("commas", Target("month_name", "The name of a calendar month."))])
    assert [v.names_it for v in verdicts] == [True, False]
    assert "Reply with exactly one word" in fake.requests[-1]["messages"][-1]["content"]


def test_unreachable_judge_endpoint_is_a_clear_error_before_any_work() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(BenchError, match="LLM judge failed"):
        make_judge("llm", f"http://127.0.0.1:{port}/v1", "some-model")
    with pytest.raises(BenchError, match="--judge-base-url and --judge-model"):
        make_judge("llm", "", "")
    assert isinstance(LLMJudge, type)


def test_a_judge_failing_mid_run_keeps_the_explanations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sagex.bench.planted import BenchSettings, run
    from tests.fakes.openai_server import Reply

    saved = tmp_path / "explanations.json"
    saved.write_text(json.dumps({
        "sae_id": "planted-topk", "architecture": "topk", "hook_name": "model.layers.3", "concepts": "dev",
        "roles": {"0": {"role": "planted", "concept": "month_name", "kind": "lexical",
                        "description": "The name of a calendar month.", "key_terms": ["months?"]},
                  "1": {"role": "dead"}},
        "runs": [{"explainer": "heuristic", "seconds": 1.0, "error": "", "features": [
            {"feature_id": 0, "description": "month names", "labels": [["months", "calendar months"]],
             "triage_class": "", "error": "", "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0},
            {"feature_id": 1, "description": "Dead feature", "labels": [], "triage_class": "dead", "error": "",
             "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}]}]}))
    before = saved.read_text()
    # The judge answers its reachability check, then breaks (HTTP 400: not retried).
    answers = iter([Reply("yes")] + [Reply(None, status=400, error="model unloaded")] * 10)
    with FakeOpenAI(lambda _body: next(answers)) as fake:
        code = run(BenchSettings(planted=tmp_path, out=tmp_path / "llm"), "llm", fake.base_url, "fake-model",
                   from_explanations=saved)
    assert code == 2
    err = capsys.readouterr().err
    assert "LLM judge failed" in err and "--from-explanations" in err and str(saved) in err
    assert saved.read_text() == before  # nothing lost
    # ... and the offline judge reads the same file.
    assert run(BenchSettings(planted=tmp_path, out=tmp_path / "offline"), from_explanations=saved) == 0
    summary = json.loads((tmp_path / "offline" / "planted.json").read_text())["summary"][0]
    assert summary["groups"]["planted"]["recovered"] == 1 and summary["dead_triaged"] == [1, 1]
