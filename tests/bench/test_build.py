"""The planted-SAE builder on the real embedded model: probes, planting, the
SAELens folder, verification, and every kind of bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sagex.activation.formats import load_sae_file
from sagex.activation.planted.build import BuildError, BuildSettings, build, load_lm, reverify
from sagex.activation.planted.concepts import NEG, POS, Concept, Doc
from sagex.activation.planted.registry import select

HOOK = "model.layers.3"
SMALL = {"corpus_docs": 40, "templates_per_concept": 30, "max_tokens": 64, "noise": 2, "dead": 2}


def _coin(doc: Doc) -> np.ndarray:
    # Labels no model can predict: a hash of the document and position.
    return np.array([POS if hashlib.sha256(f"{doc.text}|{i}".encode()).digest()[0] < 77 else NEG
                     for i in range(len(doc))], np.int8)


NEVER = Concept("never", "user", "Nothing at all.", (), lambda d: np.full(len(d), NEG, np.int8))
COIN = Concept("coin", "user", "A coin flip per token.", (), _coin)


@pytest.fixture(scope="module")
def lm():  # type: ignore[no-untyped-def]
    model, _layer = load_lm(BuildSettings(), HOOK)
    return model


def test_build_plants_good_probes_and_reports_the_rest(lm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = {c.name: c for c in select("dev")}
    concepts = [dev["digit_number"], dev["after_comma"], NEVER, COIN]
    built = build(tmp_path / "out", BuildSettings(architecture="jumprelu", **SMALL), concepts, lm=lm)
    status = {r.concept: r for r in built.probes}
    assert status["digit_number"].status == "planted" and status["after_comma"].status == "planted"
    assert status["never"].status == "no_positives" and "marked no token positive" in status["never"].reason
    assert status["coin"].status == "weak" and status["coin"].auroc is not None and status["coin"].auroc < 0.9

    roles = [r["role"] for r in built.truth.values()]
    assert sorted(roles) == ["dead", "dead", "noise", "noise", "planted", "planted"]
    truth = json.loads((tmp_path / "out" / "truth.json").read_text())
    assert not (tmp_path / "out" / "sae" / "truth.json").exists()  # the served folder holds no answers
    assert {v.get("concept") for v in truth["features"].values()} >= {"digit_number", "after_comma"}

    sae = load_sae_file("planted", tmp_path / "out" / "sae")  # as the activation service loads it
    assert sae.params.architecture == "jumprelu" and sae.hook_name == HOOK and sae.params.d_sae == 6
    for j, role in built.truth.items():
        v = built.verification[j]
        if role["role"] == "planted":
            assert v["precision"] > 0.7 and v["recall"] > 0.5, (role, v)  # small data: recall is lower
        elif role["role"] == "noise":
            assert v["firing_rate"] > 0
        else:
            assert v["firing_rate"] == 0
    report = json.loads((tmp_path / "out" / "build.json").read_text())
    assert {p["concept"] for p in report["probes"]} == {"digit_number", "after_comma", "never", "coin"}
    # Where the benchmark mines exemplars (the embedded corpus's exemplar split), how often
    # each planted concept occurs: digits and commas are everywhere in it.
    seen = report["observability"]
    assert set(seen) == {"digit_number", "after_comma"}
    for row in seen.values():
        assert row["positives"] >= 5 and 0 < row["tokens_to_first"] <= row["tokens_to_min"] <= row["scanned_tokens"]
        assert row["at"] == sorted(row["at"]) and row["at"][4] == row["tokens_to_min"]


def test_verify_again_measures_the_same(tmp_path: Path) -> None:
    dev = {c.name: c for c in select("dev")}
    built = build(tmp_path / "out", BuildSettings(architecture="topk", **SMALL), [dev["digit_number"]])
    again = reverify(tmp_path / "out")  # from build.json alone, model loaded afresh
    assert again.verification == built.verification
    with pytest.raises(BuildError, match="not a built planted SAE"):
        reverify(tmp_path)
    # A folder built before the build counted its concepts gets the counts afterwards, the same.
    from sagex.activation.planted.__main__ import main

    path = tmp_path / "out" / "build.json"
    data = json.loads(path.read_text())
    counted = data.pop("observability")
    path.write_text(json.dumps(data))
    assert main(["observe", str(tmp_path / "out")]) == 0
    assert json.loads(path.read_text())["observability"] == counted and counted["digit_number"]["positives"] > 0
    assert main(["observe", str(tmp_path)]) == 2  # not a built folder: a clear message, no traceback


def test_nothing_plantable_is_a_clear_error(lm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BuildError, match="no concept could be planted.*never: the labeller marked no token"):
        build(tmp_path / "out", BuildSettings(**SMALL), [NEVER], lm=lm)
    assert not (tmp_path / "out" / "sae").exists()


def test_a_hook_the_model_lacks_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"hook 'model.layers.99'.*does not exist.*blocks\.\{0\.\.29\}"):
        build(tmp_path / "out", BuildSettings(hook_name="model.layers.99", **SMALL), select("dev")[:1])
    with pytest.raises(BuildError, match="hook 'lm_head'.*does not exist"):
        build(tmp_path / "out", BuildSettings(hook_name="lm_head", **SMALL), select("dev")[:1])


def test_settings_are_validated() -> None:
    with pytest.raises(BuildError, match="architecture 'gated'"):
        BuildSettings(architecture="gated")
