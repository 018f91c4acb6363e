"""Does the intervention scorer rank a planted feature's true concept above a wrong one?

Planted SAEs (``python -m sagex.activation.planted build``) have features whose
concept is known (``truth.json``; DEV concepts only). One activation server with
steering on serves them at the embedded model's hook. For every planted feature two
explanations are scored:

  * correct: the concept's own description;
  * wrong: the description of the next planted feature (by index, cyclically) whose
    concept is of a different kind (lexical, morphology, position, ...), so the two
    are never near-synonyms.

Both go through the ``intervention`` scorer (embedding judge, MiniLM): the scorer
caches steered generations per feature, so both explanations are judged on the same
steered/unsteered pairs and the comparison is paired. Per feature we count whether
correct > wrong (ties apart) on the judge's AUROC and accuracy; the win rate over
features gets a 95 % Wilson interval, the mean paired difference a bootstrap one.
The ``output`` scorer (explanation vs logit-lens tokens, same distractors for both)
is ranked the same way. As a larger sample of wrong explanations, the true
description is also ranked against every other planted concept's description on the
same generations (the fraction of them it beats). No LLM is used.

    python benchmarks/intervention_planted.py [--arch topk jumprelu] [--prompts 10] [--tokens 12]

Writes benchmarks/results/intervention_planted_cpu_<machine>.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import describe  # noqa: E402

from sagex.activation.config import ActivationConfig  # noqa: E402
from sagex.activation.server import running_activation_server  # noqa: E402
from sagex.remote.activation import ActivationClient  # noqa: E402
from sagex.scoring.embedder import MiniLMEmbedder  # noqa: E402
from sagex.scoring.heldout import FeatureData, HeldoutSpec  # noqa: E402
from sagex.scoring.scorers import ScoringInput, Toolkit, build_scorer, run_scorer  # noqa: E402
from sagex.scoring.scorers.intervention import NEUTRAL_PROMPTS, InterventionSettings  # noqa: E402
from sagex.scoring.stats import mean_ci, paired_difference, proportion_ci  # noqa: E402
from sagex.server.lifecycle import ServerOptions  # noqa: E402
from sagex.server.paths import cache_dir  # noqa: E402

RESULTS = Path(__file__).parent / "results"
METRICS = [("intervention", "auroc"), ("intervention", "accuracy"), ("output", "auroc")]


def planted_pairs(truth: dict) -> list[dict[str, object]]:
    """Each planted feature with its true description and a wrong one: the next planted
    feature's (cyclically, by index) whose concept is of another kind."""
    planted = sorted((int(j), r) for j, r in truth["features"].items() if r["role"] == "planted")
    pairs = []
    for i, (j, role) in enumerate(planted):
        others = planted[i + 1:] + planted[:i]
        wrong = next(r for _, r in others if r["kind"] != role["kind"])
        pairs.append({"feature": j, "concept": role["concept"], "kind": role["kind"],
                      "correct": role["description"], "wrong_concept": wrong["concept"], "wrong": wrong["description"]})
    return pairs


async def score_sae(client: ActivationClient, sae_id: str, truth: dict, settings: InterventionSettings,
                    embedder: MiniLMEmbedder) -> list[dict[str, object]]:
    kit = Toolkit(client, embedder=embedder)
    # One scorer per SAE: its cache holds each feature's generations for both explanations.
    scorers = {"intervention": build_scorer("intervention", kit, settings), "output": build_scorer("output", kit)}
    rows = []
    descriptions = [r["description"] for r in truth["features"].values() if r["role"] == "planted"]
    for pair in planted_pairs(truth):
        f = int(pair["feature"])  # type: ignore[call-overload]
        data = FeatureData(client, sae_id, f, HeldoutSpec(), seed=0)
        row: dict[str, object] = dict(pair)
        for which in ("correct", "wrong"):
            for name, scorer in scorers.items():
                result = await run_scorer(scorer, ScoringInput(str(pair[which]), data))
                if result.error:
                    print(f"{sae_id} feature {f} {which} {name}: {result.error.message}", flush=True)
                    continue
                for m in result.metrics:
                    row[f"{which}/{name}/{m.name}"] = m.value
                if name == "intervention":
                    for key in ("mean_kl", "strength", "identical_pairs", "prompts", "target_reached"):
                        row[f"intervention/{key}"] = result.details.get(key)
        # Every other planted concept as a wrong explanation, on the same cached generations.
        beaten = []
        own = row.get("correct/intervention/auroc")
        for other in descriptions if isinstance(own, float) else ():
            if other == pair["correct"]:
                continue
            result = await run_scorer(scorers["intervention"], ScoringInput(other, data))
            value = (next((m.value for m in result.metrics if m.name == "auroc"), float("nan"))
                     if result.ok else float("nan"))
            beaten.append(own > value)  # type: ignore[operator]
        row["beats_others"] = float(np.mean(beaten)) if beaten else float("nan")
        rows.append(row)
        print(f"{sae_id} feature {f} ({pair['concept']} vs {pair['wrong_concept']}): "
              + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)), flush=True)
    return rows


def col(rows: list[dict[str, object]], key: str) -> list[float]:
    return [float(r[key]) if isinstance(r.get(key), int | float) else float("nan") for r in rows]  # type: ignore[arg-type]


def summarise(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for scorer, metric in METRICS:
        a, b = col(rows, f"correct/{scorer}/{metric}"), col(rows, f"wrong/{scorer}/{metric}")
        d = paired_difference(a, b)
        # Strict: a tie or a missing score is not a win (n counts every planted feature).
        wins = np.array([x - y > 1e-9 for x, y in zip(a, b, strict=True)], bool)
        ci = proportion_ci(wins)
        out[f"{scorer}/{metric}"] = {
            "features": len(rows), "wins": d.wins, "ties": d.ties, "losses": d.losses, "scored": d.n,
            "win_rate": float(wins.mean()) if len(wins) else float("nan"),
            "win_rate_ci": [ci.lower, ci.upper] if ci else None,
            "mean_correct": float(np.nanmean(a)), "mean_wrong": float(np.nanmean(b)),
            "mean_difference": d.mean_difference, "difference_ci": [d.ci.lower, d.ci.upper] if d.ci else None,
            "p_value": d.p_value,
        }
    beats = np.array(col(rows, "beats_others"))
    majority = beats > 0.5
    ci, wci = mean_ci(beats), proportion_ci(majority)
    out["intervention/auroc vs every other concept"] = {
        "features": len(rows), "mean_fraction_beaten": float(np.nanmean(beats)),
        "mean_fraction_beaten_ci": [ci.lower, ci.upper] if ci else None,
        "top1": int((beats == 1).sum()), "beats_majority": int(majority.sum()),
        "beats_majority_rate_ci": [wci.lower, wci.upper] if wci else None,
    }
    return out


def cell(text: object) -> str:
    """A text as one markdown table cell: quoted, no newlines, no column breaks."""
    return json.dumps(text).replace("\\n", " ").replace("|", "\\|")


def others_line(s: dict[str, object]) -> str:
    ci, wci = s["mean_fraction_beaten_ci"], s["beats_majority_rate_ci"]
    return (f"Against every other planted concept (12 wrong descriptions per feature, same generations): the true "
            f"description beats on average {s['mean_fraction_beaten']:.2f} of them (95% bootstrap CI over features "
            f"[{ci[0]:.2f}, {ci[1]:.2f}]; chance 0.5); it beats most of them for {s['beats_majority']} of "  # type: ignore[index]
            f"{s['features']} features (Wilson [{wci[0]:.2f}, {wci[1]:.2f}]) and all of them for {s['top1']}.")  # type: ignore[index]


def table(summary: dict[str, dict[str, object]]) -> list[str]:
    lines = ["| score | correct > wrong (W/T/L) | win rate [95% Wilson] | mean correct | mean wrong | "
             "mean paired difference [95% CI], p |", "|---|---:|---:|---:|---:|---:|"]
    for key, s in summary.items():
        if "win_rate" not in s:
            continue
        ci, dci = s["win_rate_ci"], s["difference_ci"]
        win = f"{s['win_rate']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"  # type: ignore[index]
        diff = (f"{s['mean_difference']:+.3f} [{dci[0]:+.3f}, {dci[1]:+.3f}], p={s['p_value']:.3f}"  # type: ignore[index]
                if dci else f"{s['mean_difference']:+.3f}")
        lines.append(f"| {key} | {s['wins']}/{s['ties']}/{s['losses']} of {s['features']} | {win} | "
                     f"{s['mean_correct']:.3f} | {s['mean_wrong']:.3f} | {diff} |")
    return lines


def feature_table(rows: list[dict[str, object]]) -> list[str]:
    lines = ["| feature | concept | wrong concept | KL | identical pairs | intervention AUROC correct / wrong | "
             "accuracy correct / wrong | output AUROC correct / wrong |", "|---:|---|---|---:|---:|---:|---:|---:|"]

    def pair(r: dict[str, object], key: str) -> str:
        a, b = r.get(f"correct/{key}"), r.get(f"wrong/{key}")
        return f"{a:.3f} / {b:.3f}" if isinstance(a, float) and isinstance(b, float) else "-"

    for r in rows:
        kl = r.get("intervention/mean_kl")
        lines.append(f"| {r['feature']} | {r['concept']} | {r['wrong_concept']} | "
                     f"{kl if kl is not None else '-'} | {r.get('intervention/identical_pairs', '-')}/"
                     f"{r.get('intervention/prompts', '-')} | {pair(r, 'intervention/auroc')} | "
                     f"{pair(r, 'intervention/accuracy')} | {pair(r, 'output/auroc')} |")
    return lines


async def main(args: argparse.Namespace) -> None:
    folders = {arch: cache_dir() / "planted" / f"{arch}-dev-seed{args.seed}" for arch in args.arch}
    for arch, folder in folders.items():
        if not (folder / "truth.json").is_file():
            raise SystemExit(f"{folder} is missing: build it with `python -m sagex.activation.planted build "
                             f"--out {folder} --arch {arch} --concepts dev --seed {args.seed}`")
    truths = {arch: json.loads((folder / "truth.json").read_text()) for arch, folder in folders.items()}
    for arch, truth in truths.items():
        if truth.get("concepts") != "dev":
            raise SystemExit(f"{arch}: only DEV-concept planted SAEs may be used here")
    config = ActivationConfig(saes={f"planted-{arch}": folder / "sae" for arch, folder in folders.items()},
                              embedded_sae=False, steering=True,
                              server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0))
    settings = InterventionSettings(n_prompts=args.prompts, max_new_tokens=args.tokens, control=False)
    started = time.perf_counter()
    results: dict[str, dict[str, object]] = {}
    async with running_activation_server(config) as (running, _):
        client = ActivationClient([f"127.0.0.1:{running.port}"], timeout_s=600)
        embedder = MiniLMEmbedder()
        for arch in args.arch:
            t0 = time.perf_counter()
            rows = await score_sae(client, f"planted-{arch}", truths[arch], settings, embedder)
            results[arch] = {"rows": rows, "summary": summarise(rows), "seconds": round(time.perf_counter() - t0, 1)}
        # What steering does to the text: three pairs of the first two features, the same
        # request the scorer made (greedy, so the same generations).
        examples = []
        for arch in args.arch[:1]:
            for row in results[arch]["rows"][:2]:  # type: ignore[index]
                out = await client.steer(f"planted-{arch}", int(row["feature"]), NEUTRAL_PROMPTS[: settings.n_prompts],
                                         target_kl=settings.target_kl, max_new_tokens=settings.max_new_tokens, seed=0)
                examples += [{"feature": row["feature"], "concept": row["concept"], "prompt": c.prompt,
                              "steered": c.steered, "unsteered": c.unsteered} for c in out.completions[:3]]
        await client.close()
    write(results, examples, same_decoders(), args, time.perf_counter() - started)


def same_decoders() -> str:
    """The intervention and output scorers see a feature only through its decoder row;
    the builder derives it from the probe alone, so architectures may share it."""
    from safetensors.numpy import load_file

    paths = [cache_dir() / "planted" / f"{arch}-dev-seed0" / "sae" / "sae_weights.safetensors"
             for arch in ("topk", "jumprelu")]
    if not all(q.is_file() for q in paths):
        return ""
    a, b = (load_file(str(q))["W_dec"] for q in paths)
    gap = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
    return (f"The TopK and JumpReLU planted SAEs (seed 0) have the same decoder (max |ΔW_dec| = {gap:g}): they differ "
            "only in the encoder's activation function, and both scorers use the decoder row alone (steering adds "
            "α·d; the logit lens projects d), so their scores are identical and JumpReLU is not run separately.")


def write(results: dict[str, dict[str, object]], examples: list[dict[str, object]], decoders: str,
          args: argparse.Namespace, elapsed: float) -> None:
    lines = ["# Intervention scorer on planted features: correct vs wrong explanation, CPU", "",
             f"Machine: {describe()}  ", f"Date: {time.strftime('%Y-%m-%d')}  ",
             f"Workload: every planted feature of the DEV-concept planted SAEs ({', '.join(args.arch)}; seed "
             f"{args.seed}) at model.layers.3 (layer 3 of 30) of SmolLM2-135M-Instruct. Per feature, the true concept "
             "description vs a wrong one (the next planted concept of another kind), both judged on the same steered "
             f"generations: intervention scorer with {args.prompts} neutral prompts, {args.tokens} greedy tokens, "
             "target KL 1.0, MiniLM embedding judge, no random-feature control (to save time); output scorer "
             f"(20 logit-lens tokens vs 4 distractor features). Run time {elapsed / 60:.1f} min.", "",
             "A win: the correct explanation scores strictly higher than the wrong one on that feature; the win rate "
             "counts ties and failed scores as non-wins, with a 95% Wilson interval over features. The paired "
             "difference is correct − wrong, mean over features with a bootstrap 95% CI and a sign-flip p-value.", ""]
    for arch, res in results.items():
        rows = res["rows"]
        kl = col(rows, "intervention/mean_kl")  # type: ignore[arg-type]
        ident = col(rows, "intervention/identical_pairs")  # type: ignore[arg-type]
        lines += [f"## {arch} ({len(rows)} planted features, {float(res['seconds']) / 60:.1f} min)", "",  # type: ignore[arg-type]
                  *table(res["summary"]), "",  # type: ignore[arg-type]
                  others_line(res["summary"]["intervention/auroc vs every other concept"]), "",  # type: ignore[index]
                  f"Steering reached KL {np.nanmean(kl):.3f} ± {np.nanstd(kl):.3f} (target 1.0); "
                  f"{np.nansum(ident):.0f} of {len(rows) * args.prompts} steered continuations were identical to the "
                  "unsteered ones (left out by the scorer).", "", *feature_table(rows), ""]  # type: ignore[arg-type]
    if decoders:
        lines += [decoders, ""]
    if examples:
        lines += ["Steered vs unsteered continuations (what the judge compares):", "",
                  "| feature | prompt | steered | unsteered |", "|---|---|---|---|"]
        lines += [f"| {e['concept']} | {cell(e['prompt'])} | {cell(e['steered'])} | {cell(e['unsteered'])} |"
                  for e in examples]
        lines.append("")
    lines += ["    python benchmarks/intervention_planted.py --arch " + " ".join(args.arch)
              + f" --prompts {args.prompts} --tokens {args.tokens}"]
    RESULTS.mkdir(exist_ok=True)
    machine = f"cpu_{platform.machine()}_{os.cpu_count()}cpu"
    (RESULTS / f"intervention_planted_{machine}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"intervention_planted_{machine}.json").write_text(json.dumps(
        {"machine": describe(), "settings": vars(args), "seconds": round(elapsed, 1), "results": results,
         "examples": examples, "decoders": decoders}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["topk"], choices=["topk", "jumprelu"])
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
