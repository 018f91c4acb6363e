"""Input-only vs input+output explanations of embedded-SAE features, in one run.

For N live features of the embedded SAE, the heuristic agent explains each one on an
activation server with steering on. Its final description has an input part (what
makes the feature fire, from probes) and an output part ("What it does": the logit
lens, and a steering probe). The input-only explanation is the same text cut before
"What it does". Both are scored on the same data:

  * intervention (embedding judge, MiniLM): neutral prompts steered at KL 1, which of
    each steered/unsteered pair is closer to the explanation; both explanations are
    judged on the same generations (paired), with a random-feature control;
  * output (embedding): explanation vs the feature's logit-lens tokens, against 4
    distractor features' tokens (AUROC);
  * embedding (input side, held-out windows): to see what the output part costs there.

No LLM is used (the generative and predictive scores need one; none is configured here).
Per-feature means, 95 % bootstrap CIs over features and paired differences are written
to benchmarks/results/output_side_cpu_<machine>.{md,json}.

    python benchmarks/output_side.py [--features 8]
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

from sagex.activation.assets.paths import EMBEDDED_SAE_ID  # noqa: E402
from sagex.activation.config import ActivationConfig  # noqa: E402
from sagex.activation.server import running_activation_server  # noqa: E402
from sagex.agent.budget import Budget  # noqa: E402
from sagex.agent.config import AgentConfig  # noqa: E402
from sagex.agent.explainer import Explainer, RunSpec  # noqa: E402
from sagex.agent.policies.heuristic import HeuristicPolicy  # noqa: E402
from sagex.remote.activation import ActivationClient  # noqa: E402
from sagex.scoring.embedder import MiniLMEmbedder  # noqa: E402
from sagex.scoring.heldout import FeatureData, HeldoutSpec  # noqa: E402
from sagex.scoring.scorers import ScoringInput, Toolkit, build_scorer, run_scorer  # noqa: E402
from sagex.scoring.scorers.intervention import InterventionSettings  # noqa: E402
from sagex.scoring.stats import mean_ci, paired_difference  # noqa: E402
from sagex.server.lifecycle import ServerOptions  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MINING_TOKENS = 60_000  # the demo's scan, cached after the first run
CUT = " What it does:"
SCORES = [("intervention", "accuracy"), ("intervention", "auroc"), ("output", "auroc"), ("embedding", "auroc")]


async def live_features(client: ActivationClient, n: int) -> list[int]:
    sae = await client.sae(EMBEDDED_SAE_ID)
    assert sae is not None
    stats = await client.statistics(EMBEDDED_SAE_ID, list(range(sae.d_sae)))
    live = [f for f, s in stats.items() if 0.005 < s.window_frequency < 0.2]
    return [int(f) for f in np.random.default_rng(0).choice(live, size=n, replace=False)]


def fmt(values: list[float]) -> str:
    x = np.asarray([v for v in values if np.isfinite(v)])
    ci = mean_ci(x)
    return f"{x.mean():.3f} [{ci.lower:.3f}, {ci.upper:.3f}]" if ci else f"{x.mean():.3f}"


async def main(n: int) -> None:
    config = ActivationConfig(steering=True, max_mining_tokens=MINING_TOKENS,
                              server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0))
    started = time.perf_counter()
    async with running_activation_server(config) as (running, _):
        client = ActivationClient([f"127.0.0.1:{running.port}"], timeout_s=600)
        features = await live_features(client, n)
        agent = AgentConfig(activation=(f"127.0.0.1:{running.port}",))
        explainer = Explainer(agent, client, lambda _: HeuristicPolicy())
        kit = Toolkit(client, embedder=MiniLMEmbedder())
        settings = InterventionSettings(n_prompts=10, max_new_tokens=12)
        scorers = {"intervention": build_scorer("intervention", kit, settings), "output": build_scorer("output", kit),
                   "embedding": build_scorer("embedding", kit)}
        rows = []
        for f in features:
            outcome = await explainer.explain(RunSpec(EMBEDDED_SAE_ID, f, "heuristic", "",
                                                      Budget(max_rounds=3, max_seconds=600), 4, skip_triage=True))
            if outcome.failed or outcome.conclusion is None:
                print(f"feature {f}: not explained ({outcome.error})", flush=True)
                continue
            full = outcome.conclusion.description
            explanations = {"input+output": full, "input-only": full.split(CUT, 1)[0]}
            row: dict[str, object] = {"feature": f, **dict(explanations.items())}
            data = FeatureData(client, EMBEDDED_SAE_ID, f, HeldoutSpec(), seed=0)
            for kind, text in explanations.items():
                for name, scorer in scorers.items():
                    result = await run_scorer(scorer, ScoringInput(text, data))
                    if result.error:
                        print(f"feature {f} {kind} {name}: {result.error.message}", flush=True)
                        continue
                    for m in result.metrics:
                        row[f"{kind}/{name}/{m.name}"] = m.value
                    if name == "intervention":  # the same generations for both texts; the control differs
                        for key in ("mean_kl", "strength", "identical_pairs"):
                            row[f"{name}/{key}"] = result.details.get(key)
                        row[f"{kind}/{name}/control_accuracy"] = result.details.get("control_accuracy")
            rows.append(row)
            print(f"feature {f}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items()
                                               if isinstance(v, float)), flush=True)
        await client.close()
    elapsed = time.perf_counter() - started
    write(rows, n, elapsed)


def write(rows: list[dict[str, object]], n: int, elapsed: float) -> None:
    def col(key: str) -> list[float]:
        return [float(r[key]) if isinstance(r.get(key), int | float) else float("nan") for r in rows]  # type: ignore[arg-type]

    lines = ["# Output-side evidence: input-only vs input+output explanations, CPU", "",
             f"Machine: {describe()}  ",
             f"Date: {time.strftime('%Y-%m-%d')}  ",
             f"Workload: {len(rows)} of {n} sampled live features of {EMBEDDED_SAE_ID} (layer 3 of 30) explained "
             "by the heuristic agent with a steering probe; each explanation scored with the input-only part "
             "and in full. Intervention: 10 neutral prompts, 12 greedy tokens, target KL 1.0, MiniLM judge. "
             f"Run time {elapsed / 60:.1f} min.", "",
             "| score (mean over features [95% CI]) | input-only | input+output | paired difference (full − input) |",
             "|---|---:|---:|---:|"]
    table = {}
    for scorer, metric in SCORES:
        a, b = col(f"input+output/{scorer}/{metric}"), col(f"input-only/{scorer}/{metric}")
        d = paired_difference(a, b)
        diff = (f"{d.mean_difference:+.3f} [{d.ci.lower:+.3f}, {d.ci.upper:+.3f}], p={d.p_value:.3f}, "
                f"{d.wins}/{d.ties}/{d.losses} w/t/l" if d.ci else f"{d.mean_difference:+.3f}")
        lines.append(f"| {scorer} {metric} | {fmt(b)} | {fmt(a)} | {diff} |")
        table[f"{scorer}/{metric}"] = {"input_only": b, "input_output": a, "difference": d.mean_difference,
                                       "p_value": d.p_value}
    control = {kind: col(f"{kind}/intervention/control_accuracy") for kind in ("input-only", "input+output")}
    kl = col("intervention/mean_kl")
    lines += ["", f"Intervention controls: achieved KL {np.nanmean(kl):.3f} ± {np.nanstd(kl):.3f} (target 1.0); "
              "judge accuracy on a random other feature steered to the same KL (chance 0.5): "
              f"{fmt(control['input-only'])} with the input-only explanation, {fmt(control['input+output'])} with "
              "the full one.", "",
              "Reading: the output part of an explanation (logit-lens words and the steering result) is what the "
              "output and intervention scores can reward; the embedding (input-side) score shows what the extra "
              "sentence costs on held-out activating windows. The output score is partly circular here: the output "
              "part lists logit-lens words and the output score compares with logit-lens tokens, so its gain is an "
              "upper bound, not evidence of insight. Layer 3 of a 30-layer model is far from the output, so its "
              "logit lens is mostly noise and steered text mostly degenerates; expect small effects.",
              "", "    python benchmarks/output_side.py --features " + str(n)]
    RESULTS.mkdir(exist_ok=True)
    machine = f"cpu_{platform.machine()}_{os.cpu_count()}cpu"
    (RESULTS / f"output_side_{machine}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"output_side_{machine}.json").write_text(json.dumps({"rows": rows, "summary": table}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=8)
    asyncio.run(main(parser.parse_args().features))
