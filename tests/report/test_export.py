"""Exports on real results: the report stack (activation, agent, scoring servers; features
explained by the agent, scored by the embedding scorer) written as Neuronpedia upload
batches and as a delphi-style folder, validated against the formats' published field
rules, and read back with the same explanations and values."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import numpy as np
import pytest

from sagex.export import Target, delphi, neuronpedia
from tests.agent.conftest import SAE
from tests.report.test_report import Stack, stack  # noqa: F401 - the shared fixture

on_loop = pytest.mark.asyncio(loop_scope="session")  # the async tests share the session's servers
TARGET = Target("smollm2-135m-instruct", "3-smollm2-topk32", "layers.3", "model.layers.3", "test")


def _check_round_trip_neuronpedia(stack: Stack, folder: Path, target: Target) -> None:  # noqa: F811
    model_id, source, feats = neuronpedia.read(folder)
    assert (model_id, source) == (target.model_id, target.source)
    assert set(feats) == {fr.feature_id for fr in stack.report.features}
    for fr in stack.report.features:
        got = feats[fr.feature_id]
        assert got.explanation == fr.explanation.description
        assert fr.exemplars is not None and len(got.activations) == len(fr.exemplars.top)
        for (tokens, values), e in zip(got.activations, fr.exemplars.top, strict=True):
            assert tokens == e.tokens
            assert np.array_equal(np.float32(values), e.values)  # float32 -> JSON -> float32 is exact
        [embedding] = fr.scores
        assert got.scores == {"embedding": embedding.metrics[0].value}


@on_loop
async def test_neuronpedia_batches_validate_and_round_trip(stack: Stack, tmp_path: Path) -> None:  # noqa: F811
    files = neuronpedia.write(stack.report, tmp_path, TARGET)
    batches = [json.loads(p.read_text()) for p in files if p.name.startswith("batch-")]
    assert batches and all(neuronpedia.validate_batch(b) == [] for b in batches)
    assert set(batches[0]) == {"modelId", "source", "features"}
    for f in batches[0]["features"]:
        assert set(f) <= {"index", "density", "topLogits", "bottomLogits", "explanations", "activations"}
        assert all(set(a) == {"tokens", "values"} for a in f["activations"])
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert {r["explanationScoreTypeName"] for r in rows} == {"embedding"}
    assert all(set(r) >= {"value", "jsonDetails", "explanationScoreModelName"} for r in rows)
    _check_round_trip_neuronpedia(stack, tmp_path, TARGET)


def test_the_validator_refuses_what_the_upload_endpoint_refuses() -> None:
    good = {"modelId": "m", "source": "3-x", "features": [
        {"index": 4, "explanations": [{"text": "the word dog"}],
         "activations": [{"tokens": ["a", "b"], "values": [0, 1.5]}]}]}
    assert neuronpedia.validate_batch(good) == []
    cases = {
        "differ in length": lambda b: b["features"][0]["activations"][0]["values"].append(2.0),
        "1..512 characters": lambda b: b["features"][0]["explanations"][0].update(text="x" * 513),
        "at least one activation": lambda b: b["features"][0].update(activations=[]),
        "1..128 features": lambda b: b.update(features=b["features"] * 129),
        "non-negative integer": lambda b: b["features"][0].update(index="4"),
        "finite numbers": lambda b: b["features"][0]["activations"][0].update(values=[0.0, float("nan")]),
        "unknown key 'score'": lambda b: b["features"][0].update(score=1.0),
        "modelId": lambda b: b.update(modelId=""),
        "density": lambda b: b["features"][0].update(density=1.5),
    }
    for needle, breaks in cases.items():
        bad = copy.deepcopy(good)
        breaks(bad)
        problems = neuronpedia.validate_batch(bad)
        assert any(needle in p for p in problems), (needle, problems)


@on_loop
async def test_delphi_folder_has_one_file_per_latent_and_round_trips(stack: Stack, tmp_path: Path) -> None:  # noqa: F811
    delphi.write(stack.report, tmp_path, TARGET)
    ids = [fr.feature_id for fr in stack.report.features]
    assert sorted(p.name for p in (tmp_path / "explanations").iterdir()) == sorted(
        f"layers.3_latent{i}.txt" for i in ids)
    assert sorted(p.name for p in (tmp_path / "scores" / "embedding").iterdir()) == sorted(
        f"layers.3_latent{i}.txt" for i in ids)
    config, latents = delphi.read(tmp_path)
    assert config["hookpoints"] == ["layers.3"] and config["scorers"] == ["embedding"]
    for fr in stack.report.features:
        lat = latents[("layers.3", fr.feature_id)]
        # delphi's analysis takes the index after the last "latent" of the stem
        assert int(f"layers.3_latent{fr.feature_id}".split("latent")[-1]) == fr.feature_id
        assert lat.explanation == fr.explanation.description
        [embedding] = fr.scores
        assert lat.scores["embedding"]["metrics"][0]["value"] == embedding.metrics[0].value
        assert lat.scores["embedding"]["metrics"][0]["n"] == embedding.metrics[0].n
        assert fr.exemplars is not None
        for got, e in zip(lat.activations, fr.exemplars.top, strict=True):
            assert tuple(got["str_tokens"]) == e.tokens and got["window_id"] == e.window_id
            assert np.array_equal(np.float32(got["activations"]), e.values)


@on_loop
async def test_sage_export_command_writes_both_formats(stack: Stack, tmp_path: Path) -> None:  # noqa: F811
    from sagex.cli.main import main

    ids = ",".join(str(fr.feature_id) for fr in stack.report.features)
    rc = await asyncio.to_thread(main, [
        "export", SAE, ids, "--out", str(tmp_path), "--agent", stack.agent, "--activation", stack.activation,
        "--scoring", stack.scoring, "--scorers", "embedding",
    ])
    assert rc == 0
    model_id, source, feats = neuronpedia.read(tmp_path / "neuronpedia")
    # defaults come from GetModelInfo: the served model's name, the SAE's resolved hook
    assert model_id == "smollm2-135m-instruct" and source.startswith("3-")
    assert set(feats) == {fr.feature_id for fr in stack.report.features}
    config, latents = delphi.read(tmp_path / "delphi")
    assert config["hookpoints"] == ["layers.3"] and {i for _, i in latents} == set(feats)
    # the command exports each feature's newest explanation (the fixture's comparison re-explained them)
    from sagex.report import latest_explanations
    from sagex.sdk import Sage

    def newest_explanations():  # type: ignore[no-untyped-def]
        with Sage(agent=stack.agent) as sage:  # off the loop: the servers run on it
            return latest_explanations(sage, SAE, sorted(feats))

    newest = await asyncio.to_thread(newest_explanations)
    for ex in newest:
        assert feats[ex.feature_id].explanation == ex.description
        assert latents[("layers.3", ex.feature_id)].explanation == ex.description
