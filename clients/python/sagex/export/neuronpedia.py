"""Neuronpedia's feature upload format (``POST /api/feature/upload-batch``), written and read back.

A batch is ``{modelId, source, features[1..128]}``; a feature is ``{index, density?,
topLogits?, bottomLogits?, explanations?[{text (1..512 chars), methodName?, modelName?}],
activations[>=1 {tokens[1..1024], values[1..1024], quantileMax?, quantileMin?,
quantileFraction?}]}`` with tokens and values of equal length (the webapp's yup schema
and its Python client, docs/formats.md 5.2). ``validate_batch`` checks exactly those
rules, so a file that passes here is one the endpoint accepts.

Scores have no place in that payload (Neuronpedia stores them as ``ExplanationScore``
rows: type name, model name, value, JSON details), so they go to ``scores.jsonl`` next
to the batches, one row per (feature, scorer), keyed by ``modelId``/``layer``/``index``
and the explanation text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagex.export.target import Target
from sagex.report.model import Report

MAX_FEATURES_PER_BATCH = 128
MAX_TOKENS = 1024
MAX_EXPLANATION_CHARS = 512
MAX_LOGITS = 20
SCORE_MODEL = "sagex"

_BATCH_KEYS = {"modelId", "source", "features"}
_FEATURE_KEYS = {"index", "density", "topLogits", "bottomLogits", "explanations", "activations"}
_EXPLANATION_KEYS = {"text", "methodName", "modelName"}
_ACTIVATION_KEYS = {"tokens", "values", "quantileMax", "quantileMin", "quantileFraction"}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate_batch(batch: Mapping[str, Any]) -> list[str]:
    """Every way ``batch`` breaks the upload schema (empty: valid)."""
    problems: list[str] = []
    if not isinstance(batch, Mapping):
        return ["batch: not an object"]
    problems += [f"batch: unknown key {k!r}" for k in sorted(set(batch) - _BATCH_KEYS)]
    for key in ("modelId", "source"):
        if not isinstance(batch.get(key), str) or not batch[key]:
            problems.append(f"{key}: a non-empty string is required")
    features = batch.get("features")
    if not isinstance(features, list) or not 1 <= len(features) <= MAX_FEATURES_PER_BATCH:
        return [*problems, f"features: 1..{MAX_FEATURES_PER_BATCH} features are required"]
    for i, f in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(f, Mapping):
            problems.append(f"{where}: not an object")
            continue
        problems += [f"{where}: unknown key {k!r}" for k in sorted(set(f) - _FEATURE_KEYS)]
        if not isinstance(f.get("index"), int) or isinstance(f.get("index"), bool) or f["index"] < 0:
            problems.append(f"{where}.index: a non-negative integer is required")
        if "density" in f and not (_number(f["density"]) and 0 <= f["density"] <= 1):
            problems.append(f"{where}.density: must be a number in [0, 1]")
        for key in ("topLogits", "bottomLogits"):
            if key in f:
                logits = f[key]
                if not isinstance(logits, list) or len(logits) > MAX_LOGITS or not all(
                        isinstance(x, Mapping) and isinstance(x.get("token"), str) and _number(x.get("value"))
                        for x in logits):
                    problems.append(f"{where}.{key}: at most {MAX_LOGITS} {{token, value}} objects")
        for j, ex in enumerate(f.get("explanations", [])):
            w = f"{where}.explanations[{j}]"
            if not isinstance(ex, Mapping):
                problems.append(f"{w}: not an object")
                continue
            problems += [f"{w}: unknown key {k!r}" for k in sorted(set(ex) - _EXPLANATION_KEYS)]
            text = ex.get("text")
            if not isinstance(text, str) or not 1 <= len(text) <= MAX_EXPLANATION_CHARS:
                problems.append(f"{w}.text: 1..{MAX_EXPLANATION_CHARS} characters are required")
            for key in ("methodName", "modelName"):
                if key in ex and not isinstance(ex[key], str):
                    problems.append(f"{w}.{key}: must be a string")
        acts = f.get("activations")
        if not isinstance(acts, list) or not acts:
            problems.append(f"{where}.activations: at least one activation is required")
            continue
        for j, a in enumerate(acts):
            w = f"{where}.activations[{j}]"
            if not isinstance(a, Mapping):
                problems.append(f"{w}: not an object")
                continue
            problems += [f"{w}: unknown key {k!r}" for k in sorted(set(a) - _ACTIVATION_KEYS)]
            tokens, values = a.get("tokens"), a.get("values")
            if not isinstance(tokens, list) or not 1 <= len(tokens) <= MAX_TOKENS or not all(
                    isinstance(t, str) for t in tokens):
                problems.append(f"{w}.tokens: 1..{MAX_TOKENS} strings are required")
            if not isinstance(values, list) or not 1 <= len(values) <= MAX_TOKENS or not all(
                    _number(v) for v in values):
                problems.append(f"{w}.values: 1..{MAX_TOKENS} finite numbers are required")
            elif isinstance(tokens, list) and len(tokens) != len(values):
                problems.append(f"{w}: tokens ({len(tokens)}) and values ({len(values)}) differ in length")
            for key in ("quantileMax", "quantileMin", "quantileFraction"):
                if key in a and not _number(a[key]):
                    problems.append(f"{w}.{key}: must be a finite number")
    return problems


def _activation(tokens: Sequence[str], values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    n = min(len(tokens), MAX_TOKENS)
    return {"tokens": list(tokens[:n]), "values": [float(v) for v in values[:n]]}


def features(report: Report) -> tuple[list[dict[str, Any]], list[str]]:
    """Upload-schema features of a report, and a note for each feature left out (and why)."""
    out: list[dict[str, Any]] = []
    skipped: list[str] = []
    for fr in report.features:
        ex = fr.explanation
        acts = [_activation(e.tokens, e.values) for e in (fr.exemplars.top if fr.exemplars else ()) if e.tokens]
        if not acts:  # no mined exemplars: the agent's firing probes are measured activations too
            acts = [_activation(p.tokens, p.values) for p in ex.probes if p.tokens and p.max_activation > 0]
        if not acts:
            skipped.append(f"feature {ex.feature_id}: no activation to upload (Neuronpedia requires one)")
            continue
        feature: dict[str, Any] = {"index": int(ex.feature_id), "activations": acts}
        if ex.description and not ex.failed:
            feature["explanations"] = [{"text": ex.description[:MAX_EXPLANATION_CHARS],
                                        "methodName": f"sage-{ex.policy or 'agent'}", "modelName": ex.policy or "sage"}]
        out.append(feature)
    return out, skipped


def score_rows(report: Report, target: Target) -> list[dict[str, Any]]:
    """One ``ExplanationScore``-shaped row per (feature, scorer) that ran."""
    rows = []
    for fr in report.features:
        for s in fr.scores:
            if s.error or not s.metrics:
                continue
            primary = s.metrics[0]
            rows.append({
                "modelId": target.model_id, "layer": target.source, "index": str(fr.feature_id),
                "explanation": fr.explanation.description,
                "explanationScoreTypeName": s.scorer, "explanationScoreModelName": SCORE_MODEL,
                "value": None if math.isnan(primary.value) else primary.value,
                "jsonDetails": json.dumps({
                    "metrics": [{"name": m.name, "value": None if math.isnan(m.value) else m.value, "n": m.n,
                                 "ci": list(m.ci) if m.ci else None, "level": m.level} for m in s.metrics],
                    "details": dict(s.details),
                }),
            })
    return rows


def write(report: Report, out: Path, target: Target) -> list[Path]:
    """``out/batch-{n}.json`` (each a valid upload payload) and ``out/scores.jsonl``."""
    feats, skipped = features(report)
    if not feats:
        raise ValueError("nothing to export to Neuronpedia: " + "; ".join(skipped or ["no features"]))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for n, start in enumerate(range(0, len(feats), MAX_FEATURES_PER_BATCH)):
        batch = {"modelId": target.model_id, "source": target.source,
                 "features": feats[start:start + MAX_FEATURES_PER_BATCH]}
        problems = validate_batch(batch)
        if problems:  # a bug here, never the user's: fail loudly instead of writing a file the API rejects
            raise ValueError("export does not fit Neuronpedia's schema: " + "; ".join(problems[:5]))
        path = out / f"batch-{n}.json"
        path.write_text(json.dumps(batch, ensure_ascii=False))
        written.append(path)
    scores = out / "scores.jsonl"
    scores.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in score_rows(report, target)))
    written.append(scores)
    if skipped:
        (out / "skipped.txt").write_text("\n".join(skipped) + "\n")
    return written


@dataclass(frozen=True)
class NeuronpediaFeature:
    index: int
    explanation: str
    activations: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...]
    scores: dict[str, float | None] = field(default_factory=dict)  # scorer -> primary metric


def read(out: Path) -> tuple[str, str, dict[int, NeuronpediaFeature]]:
    """(modelId, source, features) from a folder ``write`` made; every batch is re-validated."""
    model_id = source = ""
    found: dict[int, NeuronpediaFeature] = {}
    for path in sorted(out.glob("batch-*.json"), key=lambda p: int(p.stem.split("-")[1])):
        batch = json.loads(path.read_text())
        problems = validate_batch(batch)
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems[:5]))
        model_id, source = batch["modelId"], batch["source"]
        for f in batch["features"]:
            text = f["explanations"][0]["text"] if f.get("explanations") else ""
            acts = tuple((tuple(a["tokens"]), tuple(a["values"])) for a in f["activations"])
            found[f["index"]] = NeuronpediaFeature(f["index"], text, acts)
    scores = out / "scores.jsonl"
    for line in scores.read_text().splitlines() if scores.is_file() else []:
        row = json.loads(line)
        found[int(row["index"])].scores[row["explanationScoreTypeName"]] = row["value"]
    return model_id, source, found
