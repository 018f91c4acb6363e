"""`sage bench planted` end to end on a tiny planted SAE, with real servers: the
activation service serving the folder like any SAELens folder, the agent explaining
every feature, the offline judge, the table, and bad input that loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagex.activation.planted.build import BuildSettings, build
from sagex.activation.planted.registry import select
from sagex.bench.planted import BenchSettings, run
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dev = {c.name: c for c in select("dev")}
    out = tmp_path_factory.mktemp("planted") / "tiny"
    build(out, BuildSettings(architecture="topk", k=4, corpus_docs=40, templates_per_concept=30, max_tokens=64,
                             noise=2, dead=2), [dev["digit_number"], dev["after_comma"], dev["line_start"]])
    return out


def _config(tmp: Path, corpus: Path) -> Path:
    path = tmp / "bench.toml"
    path.write_text(f'[activation]\ncorpus_dir = "{corpus}"\nmining_cache_dir = "{tmp / "mining"}"\n'
                    "max_mining_tokens = 4000\nwindow_tokens = 32\n")
    return path


def test_bench_planted_end_to_end(planted: Path, mining_corpus: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    with FakeOpenAI(lambda _body: "Digits of numbers written in numerals.") as llm:  # the baseline's LLM
        settings = BenchSettings(planted=planted, explainers=("heuristic", "single_pass", "no_such_policy"),
                                 config=str(_config(tmp_path, mining_corpus)), max_rounds=1, concurrency=4, out=out,
                                 llm_base_url=llm.base_url, llm_model="fake-model")
        assert run(settings) == 0
    printed = capsys.readouterr().out
    assert "| explainer | recovered: planted |" in printed and "| heuristic |" in printed

    data = json.loads((out / "planted.json").read_text())
    [heuristic, single, bogus] = data["summary"]
    assert heuristic["features"] == 7 and heuristic["failed"] == 0 and not heuristic["error"]
    assert heuristic["groups"]["planted"]["n"] == 3
    assert set(heuristic["groups"]) == {"planted", "lexical", "context", "position"}
    lo, hi = heuristic["groups"]["planted"]["ci95"]
    assert 0 <= lo <= heuristic["groups"]["planted"]["rate"] <= hi <= 1
    assert heuristic["dead_triaged"] == [2, 2]  # the dead fillers never fire, so triage names them
    assert heuristic["noise_flagged"][1] == 2
    assert single["features"] == 7 and single["failed"] == 0 and single["dead_triaged"] == [2, 2]
    assert single["groups"]["lexical"]["recovered"] == 1  # the one concept its (scripted) phrase names
    assert single["groups"]["planted"]["recovered"] == 1 and single["llm_tokens_per_feature"] > 0
    assert "not one of" in bogus["error"]  # an unknown policy is reported, the other rows stand
    truth = json.loads((planted / "truth.json").read_text())["features"]
    records = {r["feature"]: r for r in data["features"]["heuristic"]}
    assert {str(f) for f in records} == set(truth)
    for f, rec in records.items():
        assert rec["role"] == truth[str(f)]["role"]
        if rec["role"] == "planted":
            assert isinstance(rec["names_concept"], bool) and rec.get("judge_reason")
    assert "## Per feature" in (out / "planted.md").read_text()

    # The saved explanations re-judge without any server.
    again = tmp_path / "again"
    assert run(BenchSettings(planted=planted, out=again), from_explanations=out / "explanations.json") == 0
    assert json.loads((again / "planted.json").read_text())["summary"][0]["groups"] == heuristic["groups"]


def test_an_sae_at_a_hook_the_model_lacks_fails_clearly(planted: Path, mining_corpus: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(planted, bad)
    cfg = json.loads((bad / "sae" / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "model.layers.99"
    (bad / "sae" / "cfg.json").write_text(json.dumps(cfg))
    settings = BenchSettings(planted=bad, config=str(_config(tmp_path, mining_corpus)), out=tmp_path / "o")
    assert run(settings) == 2
    err = capsys.readouterr().err
    assert "sage bench planted:" in err and "did not start" in err


def test_auto_mining_budget_covers_every_planted_concept(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from sagex.bench.planted import BenchError, auto_mining_tokens, observability_table, resolve_mining_tokens

    def counts(**tokens_to_min: int | None) -> dict[str, dict[str, object]]:
        return {name: {"positives": 5 if n else 2, "scanned_tokens": 340_000, "tokens_to_first": 10,
                       "tokens_to_min": n, "at": [10, 20] + ([30, 40, n] if n else [])}
                for name, n in tokens_to_min.items()}

    (tmp_path / "build.json").write_text(json.dumps({"observability": counts(common=900, rare=157_213)}))
    assert auto_mining_tokens(tmp_path) == (160_000, [])
    assert resolve_mining_tokens(tmp_path, "auto") == 160_000 and "160,000 tokens" in capsys.readouterr().out
    assert resolve_mining_tokens(tmp_path, "5000") == 5000
    with pytest.raises(BenchError, match="number of tokens or auto"):
        resolve_mining_tokens(tmp_path, "lots")
    table = observability_table(tmp_path, 100_000)
    assert "| rare | 4 | 10 | 157213 |" in table and "| common | 5 | 10 | 900 |" in table

    (tmp_path / "build.json").write_text(json.dumps({"observability": counts(common=900, never=None)}))
    assert auto_mining_tokens(tmp_path) == (60_000, ["never"])  # the floor; the rare one is named, not hidden


def test_not_a_planted_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(BenchSettings(planted=tmp_path)) == 2
    assert "is not a planted SAE folder" in capsys.readouterr().err
