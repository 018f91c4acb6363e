"""A delphi-style result folder: one file per latent, named as delphi names latents.

delphi (EleutherAI) writes ``explanations/{module}_latent{i}.txt`` holding the
explanation as a JSON string, and ``scores/{scorer}/{module}_latent{i}.txt`` per
scorer, where ``module`` is the hookpoint (``layers.3``) and a ``/`` in the name
becomes ``--``; its analysis parses the latent index after the last ``latent`` in the
file stem (docs/formats.md 5.5). We keep that layout and naming.

Differences, stated: delphi's fuzz/detection score files are lists of per-example
judgements; SAGE's scoring service returns metrics with confidence intervals, so
our score files hold ``{scorer, metrics[{name, value, n, ci, level}], details}``.
Top activations have no per-latent file in delphi (it caches token ids in
safetensors splits); we add ``activations/{module}_latent{i}.json`` with
``[{str_tokens, activations, max_activation, window_id}]`` (delphi's example field names).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagex.export.target import Target
from sagex.report.model import Report


def latent_name(module: str, index: int) -> str:
    return f"{module}_latent{index}".replace("/", "--")


def _finite(v: float) -> float | None:
    return None if math.isnan(v) else v


def write(report: Report, out: Path, target: Target) -> list[Path]:
    written: list[Path] = []
    scorers = sorted({s.scorer for fr in report.features for s in fr.scores if not s.error})
    config = {"model": target.model_id, "sparse_model": target.sae_source, "hookpoints": [target.module],
              "explainer": "sage", "scorers": scorers,
              "sage": {"sae_id": report.sae, "hook_name": target.hook_name, "neuronpedia_source": target.source,
                       "created": report.created, "notes": list(report.notes)}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_config.json").write_text(json.dumps(config, indent=2))
    written.append(out / "run_config.json")
    for fr in report.features:
        name = latent_name(target.module, fr.feature_id)
        ex = fr.explanation
        if ex.description and not ex.failed:
            path = out / "explanations" / f"{name}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ex.description, ensure_ascii=False))
            written.append(path)
        for s in fr.scores:
            if s.error:
                continue
            path = out / "scores" / s.scorer / f"{name}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({
                "scorer": s.scorer,
                "metrics": [{"name": m.name, "value": _finite(m.value), "n": m.n,
                             "ci": list(m.ci) if m.ci else None, "level": m.level} for m in s.metrics],
                "details": dict(s.details),
            }))
            written.append(path)
        if fr.exemplars and fr.exemplars.top:
            path = out / "activations" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps([
                {"str_tokens": list(e.tokens), "activations": [float(v) for v in e.values],
                 "max_activation": e.max_activation, "window_id": e.window_id} for e in fr.exemplars.top
            ], ensure_ascii=False))
            written.append(path)
    return written


@dataclass(frozen=True)
class DelphiLatent:
    module: str
    index: int
    explanation: str = ""
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # scorer -> file contents
    activations: list[dict[str, Any]] = field(default_factory=list)


def _parse(stem: str) -> tuple[str, int]:
    # delphi's own rule: the index follows the last "latent"; the module is what precedes "_latent".
    head, _, tail = stem.rpartition("latent")
    return head.removesuffix("_").replace("--", "/"), int(tail)


def read(out: Path) -> tuple[dict[str, Any], dict[tuple[str, int], DelphiLatent]]:
    """(run_config, latents) from a folder ``write`` made."""
    config = json.loads((out / "run_config.json").read_text())
    latents: dict[tuple[str, int], DelphiLatent] = {}

    def latent(stem: str) -> DelphiLatent:
        key = _parse(stem)
        return latents.setdefault(key, DelphiLatent(*key))

    for path in sorted((out / "explanations").glob("*.txt")):
        lat = latent(path.stem)
        latents[(lat.module, lat.index)] = DelphiLatent(lat.module, lat.index, json.loads(path.read_text()),
                                                        lat.scores, lat.activations)
    for path in sorted((out / "scores").glob("*/*.txt")):
        latent(path.stem).scores[path.parent.name] = json.loads(path.read_text())
    for path in sorted((out / "activations").glob("*.json")):
        latent(path.stem).activations.extend(json.loads(path.read_text()))
    return config, latents
