"""Planted-feature recovery per explainer on planted SAEs of several architectures.

    python benchmarks/planted.py --arch topk jumprelu --explainers heuristic [--mining-tokens auto|N]
    python benchmarks/planted.py --arch topk --explainers heuristic,symbolic,openai,single_pass \
        --llm-base-url http://127.0.0.1:8091/v1 --llm-model smollm2-135m-instruct \
        --config benchmarks/planted_llm_local.toml --max-rounds 1 --name llm

Builds each planted SAE once (``python -m sagex.activation.planted build``, cached
under ``~/.cache/sagex/planted``), runs ``sage bench planted`` on it, and writes
``benchmarks/results/planted_<arch>_<name or explainers>_<machine>.md/.json``: the probe and
verification report of the build, then the recovery table. ``--from-out DIR`` records a
finished ``sage bench planted ... --out DIR`` run instead of running one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe

from sagex.bench.planted import BenchSettings, resolve_mining_tokens, run
from sagex.server.paths import cache_dir

RESULTS = Path(__file__).resolve().parent / "results"


def build_table(build: dict) -> str:
    lines = ["| concept | kind | probe AUROC | AP | status |", "|---|---|---:|---:|---|"]
    for p in build["probes"]:
        auroc = f"{p['auroc']:.3f}" if p["auroc"] is not None else "-"
        ap = f"{p['average_precision']:.3f}" if p["average_precision"] is not None else "-"
        lines.append(f"| {p['concept']} | {p['kind']} | {auroc} | {ap} | {p['status']} {p['reason']} |")
    return "\n".join(lines)


def verify_table(truth: dict, build: dict) -> str:
    lines = ["| index | role | concept | precision | recall | firing rate |", "|---:|---|---|---:|---:|---:|"]
    for j, role in sorted(truth["features"].items(), key=lambda kv: int(kv[0])):
        v = build["verification"][j]
        lines.append(f"| {j} | {role['role']} | {role.get('concept', '')} | {v.get('precision', '-')} | "
                     f"{v.get('recall', '-')} | {v['firing_rate']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", nargs="+", default=["topk", "jumprelu"])
    parser.add_argument("--explainers", default="heuristic")
    parser.add_argument("--concepts", default="dev")
    parser.add_argument("--mining-tokens", default="auto",
                        help="tokens scanned for exemplars; auto: enough for every planted concept to occur (the build "
                        "counts them in the exemplar split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm-base-url", default="", help="for LLM explainers (openai, single_pass)")
    parser.add_argument("--llm-model", default="")
    parser.add_argument("--config", default="", help="TOML for the services started (e.g. planted_llm_local.toml)")
    parser.add_argument("--max-rounds", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--name", default="", help="result file tag (default: the explainers)")
    parser.add_argument("--from-out", type=Path, help="record this finished `sage bench planted --out` folder")
    args = parser.parse_args()
    machine = f"cpu_{platform.machine()}_{os.cpu_count()}cpu"
    extra = "".join(f" {flag} {value}" for flag, value in (
        ("--llm-base-url", args.llm_base_url), ("--llm-model", args.llm_model), ("--config", args.config),
        ("--max-rounds", args.max_rounds or ""), ("--concurrency", args.concurrency if args.concurrency != 4 else ""))
        if value)
    for arch in args.arch:
        folder = cache_dir() / "planted" / f"{arch}-{args.concepts}-seed{args.seed}"
        if not (folder / "truth.json").is_file():
            subprocess.run([sys.executable, "-m", "sagex.activation.planted", "build", "--out", str(folder),
                            "--arch", arch, "--concepts", args.concepts, "--seed", str(args.seed)], check=True)
        out = args.from_out or folder / "bench"
        mining_tokens = resolve_mining_tokens(folder, args.mining_tokens)
        settings = BenchSettings(planted=folder, explainers=tuple(args.explainers.split(",")),
                                 mining_tokens=mining_tokens, out=out, config=args.config,
                                 max_rounds=args.max_rounds, concurrency=args.concurrency,
                                 llm_base_url=args.llm_base_url, llm_model=args.llm_model)
        if args.from_out is None and run(settings) != 0:
            return 1
        build = json.loads((folder / "build.json").read_text())
        truth = json.loads((folder / "truth.json").read_text())
        bench = (out / "planted.md").read_text()
        name = f"planted_{arch}_{args.name or args.explainers.replace(',', '-')}_{machine}"
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.md").write_text(
            f"# Planted-feature benchmark: {arch}, {args.concepts} concepts, {args.explainers}\n\n"
            f"Machine: {describe()}. Command: `python benchmarks/planted.py --arch {arch} --explainers "
            f"{args.explainers} --mining-tokens {args.mining_tokens}{extra}"
            f"{' --name ' + args.name if args.name else ''}` (= `python -m "
            f"sagex.activation.planted build --out DIR --arch {arch} --seed {args.seed}` then `sage bench planted DIR "
            f"--explainers {args.explainers} --mining-tokens {mining_tokens}{extra}`).\n\n"
            f"## Build: probes ({build['tokens']:,} tokens, {build['documents']['train']} train / "
            f"{build['documents']['test']} test documents, {build['seconds']}s)\n\n{build_table(build)}\n\n"
            f"## Build: verification on test documents (through the service's loader and encoder)\n\n"
            f"{verify_table(truth, build)}\n\n" + bench.replace("# Planted-feature benchmark\n", "## Recovery\n"))
        result = json.loads((out / "planted.json").read_text())
        (RESULTS / f"{name}.json").write_text(json.dumps({"machine": describe(), "build": build, "truth": truth,
                                                          "settings": {k: str(v) for k, v in vars(args).items()},
                                                          "bench": result}, indent=1) + "\n")
        print(f"wrote {RESULTS / name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
