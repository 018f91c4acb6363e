"""Build a planted SAE: probe directions written as encoder rows of an SAELens
folder, at seeded shuffled indices among dead fillers (never fire) and noise
fillers (random directions that do fire), then verified through the activation
service's own SAE loader and encoder.

Output folder::

    OUT/sae/         cfg.json + sae_weights.safetensors (serve it like any SAELens folder)
    OUT/truth.json   index -> concept (the agent and the activation service never read it)
    OUT/build.json   settings, probe report per concept, verification per feature
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import structlog
import torch

from sagex.activation.planted.concepts import AMBIGUOUS, POS, Concept
from sagex.activation.planted.data import Sample, build_samples, corpus_texts, hidden_states, labels_for
from sagex.activation.planted.observe import observe
from sagex.activation.planted.probes import MIN_AUROC, Probe, ProbeReport, fit

if TYPE_CHECKING:  # the model loads lazily, in the commands that need it
    from sagex.activation.lm import TruncatedLM

log = structlog.get_logger(__name__)

ARCHITECTURES = ("standard", "topk", "jumprelu")
JUMP_THRESHOLD = 1.0  # JumpReLU: pre-activations are shifted so the jump sits here
DEAD_BIAS = -1.0e4


class BuildError(ValueError):
    """The planted SAE cannot be built; the message says what to change."""


@dataclass(frozen=True)
class BuildSettings:
    architecture: str = "topk"
    concepts: str = "dev"  # dev | heldout | all | none
    extra_concepts: tuple[str, ...] = ()
    hook_name: str = ""  # "": the embedded SAE's hook
    model: str = ""  # "": the embedded model
    corpus_dir: str = ""  # "": the embedded corpus
    corpus_docs: int = 400
    templates_per_concept: int = 40
    max_tokens: int = 128
    noise: int = 6
    dead: int = 6
    k: int = 8  # TopK
    min_auroc: float = MIN_AUROC
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}")
        for name in ("corpus_docs", "templates_per_concept", "noise", "dead"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.max_tokens < 8 or self.k < 1 or not 0.5 <= self.min_auroc <= 1:
            problems.append("max_tokens >= 8, k >= 1 and min_auroc in [0.5, 1]")
        if problems:
            raise BuildError("; ".join(problems))


@dataclass
class Built:
    out: Path
    probes: list[ProbeReport]
    truth: dict[int, dict[str, object]]
    verification: dict[int, dict[str, float]] = field(default_factory=dict)


def _embedded_hook() -> str:
    from sagex.activation.assets.paths import EMBEDDED_SAE_DIR

    cfg = json.loads((EMBEDDED_SAE_DIR / "cfg.json").read_text())
    return str((cfg.get("metadata") or {}).get("hook_name") or cfg["hook_name"])


def load_lm(settings: BuildSettings, hook_name: str):  # type: ignore[no-untyped-def]
    """The activation service's own truncated model, cut at the hook; returns it and the
    hook point's key (what ``hidden_states`` is keyed by)."""
    from sagex.activation.engine import resolve_model_dir
    from sagex.activation.lm import TruncatedLM

    model_dir = resolve_model_dir(Path(settings.model) if settings.model else None)
    try:
        lm = TruncatedLM(model_dir, [hook_name], torch.device("cpu"))
    except ValueError as exc:  # a hook the model lacks (the message lists the ones it has)
        raise BuildError(str(exc)) from None
    return lm, lm.hooks[hook_name].key


def _sae_module(arch: str, d_in: int, d_sae: int, hook_name: str, k: int, model_name: str):  # type: ignore[no-untyped-def]
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    common = {"d_in": d_in, "d_sae": d_sae, "metadata": SAEMetadata(hook_name=hook_name, model_name=model_name)}
    if arch == "topk":
        return TopKSAE(TopKSAEConfig(k=k, rescale_acts_by_decoder_norm=False, **common))
    if arch == "jumprelu":
        return JumpReLUSAE(JumpReLUSAEConfig(**common))
    return StandardSAE(StandardSAEConfig(**common))


def assemble(probes: Sequence[Probe], samples: Sequence[Sample], hidden: Sequence[np.ndarray],
             settings: BuildSettings) -> tuple[dict[str, np.ndarray], dict[int, dict[str, object]]]:
    """Encoder/decoder weights and the index -> role map."""
    rng = np.random.default_rng(settings.seed)
    d_in = hidden[0].shape[1]
    n = len(probes) + settings.noise + settings.dead
    slots = rng.permutation(n)
    w_enc = np.zeros((d_in, n), np.float64)
    b_enc = np.zeros(n, np.float64)
    shift = JUMP_THRESHOLD if settings.architecture == "jumprelu" else 0.0
    truth: dict[int, dict[str, object]] = {}
    for j, probe in zip(slots[: len(probes)], probes, strict=True):
        w_enc[:, j] = probe.scale * probe.weight
        b_enc[j] = probe.scale * (probe.bias - probe.threshold) + shift
        c = probe.concept
        truth[int(j)] = {"role": "planted", "concept": c.name, "kind": c.kind, "description": c.description,
                         "key_terms": list(c.key_terms), "probe_auroc": round(probe.auroc, 4)}
    train = np.concatenate([h[1:] if s.offset == 0 else h for s, h in zip(samples, hidden, strict=True)
                            if s.split == "train"]).astype(np.float64)
    mean, std = train.mean(0), train.std(0) + 1e-6
    for j in slots[len(probes): len(probes) + settings.noise]:
        direction = rng.standard_normal(d_in) / std
        z = (train - mean) @ direction
        rate = float(math.exp(rng.uniform(math.log(0.003), math.log(0.03))))
        cut = float(np.quantile(z, 1 - rate))
        scale = 5.0 / max(float(np.quantile(z, 1 - rate / 4) - cut), 1e-6)
        w_enc[:, j] = scale * direction
        b_enc[j] = scale * (-(mean @ direction) - cut) + shift
        truth[int(j)] = {"role": "noise", "target_firing_rate": round(rate, 4)}
    for j in slots[len(probes) + settings.noise:]:
        w_enc[:, j] = rng.standard_normal(d_in) * 1e-3
        b_enc[j] = DEAD_BIAS
        truth[int(j)] = {"role": "dead"}
    w_dec = (w_enc / np.maximum(np.linalg.norm(w_enc, axis=0), 1e-12)).T
    weights = {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": np.zeros(d_in)}
    if settings.architecture == "jumprelu":
        weights["threshold"] = np.full(n, JUMP_THRESHOLD)
    return weights, dict(sorted(truth.items()))


def write_sae(folder: Path, weights: dict[str, np.ndarray], settings: BuildSettings, hook_name: str,
              model_name: str) -> None:
    d_in, d_sae = weights["W_enc"].shape
    sae = _sae_module(settings.architecture, d_in, d_sae, hook_name, min(settings.k, d_sae), model_name)
    with torch.no_grad():
        params = dict(sae.named_parameters())
        for name, value in weights.items():
            if name not in params:
                raise BuildError(f"sae-lens {settings.architecture} SAE has no parameter {name}")
            params[name].copy_(torch.as_tensor(value, dtype=torch.float32))
    folder.mkdir(parents=True, exist_ok=True)
    sae.save_model(folder)


def verify(folder: Path, truth: dict[int, dict[str, object]], concepts: Sequence[Concept],
           samples: Sequence[Sample], hidden: Sequence[np.ndarray]) -> dict[int, dict[str, float]]:
    """Each feature's held-out behaviour through the service's loader and encoder:
    planted -> precision, recall, firing rate on test documents; fillers -> firing rate."""
    from sagex.activation.encode import Threshold, encode_sparse
    from sagex.activation.formats import load_sae_file

    sae = load_sae_file("planted", folder)
    test = [i for i, s in enumerate(samples) if s.split == "test"]
    acts = []
    for i in test:
        x = torch.as_tensor(hidden[i])
        dense = encode_sparse(x, sae.params, Threshold(0.0)).to_dense(sae.params.d_sae).numpy()
        acts.append(dense[1:] if samples[i].offset == 0 else dense)  # never position 0
    fired = np.concatenate(acts) > 0
    by_name = {c.name: c for c in concepts}
    test_samples = [samples[i] for i in test]
    out: dict[int, dict[str, float]] = {}
    for j, role in truth.items():
        row: dict[str, float] = {"firing_rate": round(float(fired[:, j].mean()), 5)}
        if role["role"] == "planted":
            labels = labels_for(by_name[str(role["concept"])], test_samples)
            lab = np.concatenate([lb[1:] if s.offset == 0 else lb for s, lb in zip(test_samples, labels, strict=True)])
            keep = lab != AMBIGUOUS
            y, f = lab[keep] == POS, fired[keep, j]
            tp = float((y & f).sum())
            row["precision"] = round(tp / max(float(f.sum()), 1.0), 4)
            row["recall"] = round(tp / max(float(y.sum()), 1.0), 4)
            row["positives"] = int(y.sum())
        out[j] = row
    return out


def build(out: Path, settings: BuildSettings, concepts: Sequence[Concept], lm: TruncatedLM | None = None) -> Built:
    """Probe every concept, plant the ones that pass, write the folder, verify it.
    ``lm``: a ``TruncatedLM`` already cut at (or past) the hook's layer, to reuse."""
    start = time.perf_counter()
    hook_name = settings.hook_name or _embedded_hook()
    if lm is None:
        lm, layer = load_lm(settings, hook_name)
    else:
        captured = {p.key for p in lm.hooks.values()}
        layer = lm.hook_table.resolve(hook_name).key
        if layer not in captured:
            raise BuildError(f"the given model captures {sorted(captured)}, not the hook {hook_name!r}")
    from sagex.activation.assets.paths import cache_dir

    corpus_dir = Path(settings.corpus_dir) if settings.corpus_dir else cache_dir() / "corpus"
    try:
        corpus = corpus_texts(corpus_dir, settings.corpus_docs, settings.seed) if settings.corpus_docs else []
    except FileNotFoundError as exc:
        raise BuildError(f"{exc} (or pass --corpus-docs 0)") from None
    samples = build_samples(lm, concepts, corpus, settings.seed, settings.max_tokens,
                            settings.templates_per_concept)
    if not samples:
        raise BuildError("no documents: give corpus documents or concepts with templates")
    log.info("planted_samples", documents=len(samples), tokens=sum(len(s.doc) for s in samples))
    hidden = hidden_states(lm, layer, samples)
    probes: list[Probe] = []
    reports: list[ProbeReport] = []
    all_labels = {}
    for concept in concepts:
        labels = labels_for(concept, samples)
        all_labels[concept.name] = labels
        probe, report = fit(concept, samples, hidden, labels, settings.seed, settings.min_auroc)
        reports.append(report)
        if probe is not None:
            probes.append(probe)
        log.info("planted_probe", concept=concept.name, status=report.status, auroc=report.auroc)
    if not probes:
        reasons = "; ".join(f"{r.concept}: {r.reason}" for r in reports)
        raise BuildError(f"no concept could be planted ({reasons})")
    weights, truth = assemble(probes, samples, hidden, settings)
    out.mkdir(parents=True, exist_ok=True)
    write_sae(out / "sae", weights, settings, hook_name, lm.name)
    (out / "truth.json").write_text(json.dumps({
        "note": "ground truth of a planted SAE: index -> concept. Never give this file to an explainer.",
        "architecture": settings.architecture, "hook_name": hook_name, "concepts": settings.concepts,
        "d_sae": len(truth), "features": {str(j): role for j, role in truth.items()}}, indent=1) + "\n")
    verification = verify(out / "sae", truth, concepts, samples, hidden)
    planted = [p.concept for p in probes]
    try:  # how often each planted concept occurs where the benchmark mines exemplars
        observability = observe(lm.tokenizer, planted, corpus_dir)
    except FileNotFoundError:
        observability = {}
    (out / "build.json").write_text(json.dumps({
        "settings": asdict(settings), "concept_names": [c.name for c in concepts], "hook_name": hook_name,
        "model": lm.name,
        "documents": {"train": sum(s.split == "train" for s in samples),
                      "test": sum(s.split == "test" for s in samples)},
        "tokens": sum(len(s.doc) for s in samples), "seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
        "probes": [asdict(r) for r in reports],
        "verification": {str(j): v for j, v in verification.items()},
        "observability": observability}, indent=1) + "\n")
    return Built(out, reports, truth, verification)


def add_observability(out: Path) -> dict[str, dict[str, object]]:
    """Count a built folder's planted concepts in the exemplar split (for folders built
    before the build did it) and store the counts in its build.json."""
    from transformers import AutoTokenizer

    from sagex.activation.assets.paths import cache_dir
    from sagex.activation.engine import resolve_model_dir
    from sagex.activation.planted.registry import select

    try:
        data = json.loads((out / "build.json").read_text())
        truth = json.loads((out / "truth.json").read_text())["features"]
    except (OSError, ValueError, KeyError) as exc:
        raise BuildError(f"{out} is not a built planted SAE ({exc})") from None
    settings = data["settings"]
    known = {c.name: c for c in select(settings.get("concepts", "dev"), tuple(settings.get("extra_concepts", ())))}
    planted = [str(r["concept"]) for r in truth.values() if r.get("role") == "planted"]
    missing = [n for n in planted if n not in known]
    if missing:
        raise BuildError(f"concepts {missing} of this build are not in the registry; give them as --concept entries")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(Path(settings["model"]) if settings.get("model")
                                                                else None))
    corpus_dir = Path(settings["corpus_dir"]) if settings.get("corpus_dir") else cache_dir() / "corpus"
    data["observability"] = observe(tokenizer, [known[n] for n in planted], corpus_dir)
    tmp = out / "build.json.partial"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out / "build.json")
    return data["observability"]  # type: ignore[no-any-return]


def reverify(out: Path) -> Built:
    """Verify a built folder again (after moving it, or with another sae-lens): the same
    documents from its build settings, through the service's loader and encoder."""
    from sagex.activation.assets.paths import cache_dir
    from sagex.activation.planted.registry import select

    try:
        data = json.loads((out / "build.json").read_text())
        truth = {int(k): v for k, v in json.loads((out / "truth.json").read_text())["features"].items()}
    except (OSError, ValueError, KeyError) as exc:
        raise BuildError(f"{out} is not a built planted SAE ({exc})") from None
    settings = BuildSettings(**{**data["settings"], "extra_concepts": tuple(data["settings"]["extra_concepts"])})
    known = {c.name: c for c in select("all", settings.extra_concepts)}
    names = data.get("concept_names") or [c.name for c in select(settings.concepts, settings.extra_concepts)]
    missing = [n for n in names if n not in known]
    if missing:
        raise BuildError(f"concepts {missing} of this build are not in the registry (built from Python objects?); "
                         "verify needs them as --concept entries")
    concepts = [known[n] for n in names]  # the build's own order: the same documents
    lm, layer = load_lm(settings, data["hook_name"])
    corpus_dir = Path(settings.corpus_dir) if settings.corpus_dir else cache_dir() / "corpus"
    corpus = corpus_texts(corpus_dir, settings.corpus_docs, settings.seed) if settings.corpus_docs else []
    samples = build_samples(lm, concepts, corpus, settings.seed, settings.max_tokens, settings.templates_per_concept)
    hidden = hidden_states(lm, layer, samples)
    reports = [ProbeReport(**p) for p in data["probes"]]
    return Built(out, reports, truth, verify(out / "sae", truth, concepts, samples, hidden))


def format_report(built: Built) -> str:
    lines = [f"planted SAE: {built.out / 'sae'}   truth: {built.out / 'truth.json'} (keep it from explainers)", "",
             f"{'concept':<24} {'kind':<11} {'probe AUROC':>11} {'AP':>6}  {'status':<12} reason"]
    for r in built.probes:
        auroc = f"{r.auroc:.3f}" if r.auroc is not None else "-"
        ap = f"{r.average_precision:.3f}" if r.average_precision is not None else "-"
        lines.append(f"{r.concept:<24} {r.kind:<11} {auroc:>11} {ap:>6}  {r.status:<12} {r.reason}")
    lines += ["", f"{'index':>5} {'role':<8} {'concept':<24} {'precision':>9} {'recall':>7} {'firing rate':>11}"]
    for j, role in built.truth.items():
        v = built.verification.get(j, {})
        prec = f"{v['precision']:.3f}" if "precision" in v else "-"
        rec = f"{v['recall']:.3f}" if "recall" in v else "-"
        lines.append(f"{j:>5} {role['role']:<8} {str(role.get('concept', '')):<24} {prec:>9} {rec:>7} "
                     f"{v.get('firing_rate', 0):>11.4f}")
    return "\n".join(lines)
