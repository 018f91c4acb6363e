"""`python -m sagex.bench planted DIR ...`: recovery of planted concepts per explainer
(what `sage bench planted` runs). Builds the planted SAE first when DIR has none."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def cmd_planted(args: argparse.Namespace) -> int:
    planted = Path(args.planted)
    if args.from_explanations is None and not (planted / "truth.json").is_file():
        # Build it first (the builder needs torch and the model; it runs in its own process).
        print(f"{planted} has no planted SAE yet; building one ({args.arch}, {args.concepts} concepts) ...", flush=True)
        build = [sys.executable, "-m", "sagex.activation.planted", "build", "--out", str(planted), "--arch", args.arch,
                 "--concepts", args.concepts, "--seed", str(args.seed)]
        if subprocess.run(build, env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode != 0:
            return 2
    from sagex.bench.planted import BenchError, BenchSettings, resolve_mining_tokens, run

    explainers = tuple(e.strip() for e in args.explainers.split(",") if e.strip())
    if not explainers:
        raise SystemExit("sage bench planted: --explainers names no explainer")
    try:
        mining_tokens = (resolve_mining_tokens(planted, args.mining_tokens) if args.from_explanations is None
                         else int(args.mining_tokens) if args.mining_tokens != "auto" else 0)
    except (BenchError, ValueError) as exc:
        print(f"sage bench planted: {exc}", file=sys.stderr)
        return 2
    settings = BenchSettings(planted=planted, explainers=explainers, sae_id=args.sae_id, activation=args.activation,
                             agent=args.agent, config=args.config or "", mining_tokens=mining_tokens,
                             max_rounds=args.max_rounds, concurrency=args.concurrency,
                             llm_base_url=args.llm_base_url or "", llm_model=args.llm_model or "", out=Path(args.out))
    judge = args.judge if args.judge != "auto" else ("llm" if args.judge_base_url else "offline")
    return run(settings, judge, args.judge_base_url or "", args.judge_model or "",
               Path(args.from_explanations) if args.from_explanations else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sage bench", description="SAGE benchmarks against ground truth")
    bench_sub = parser.add_subparsers(dest="bench", required=True)
    plan = bench_sub.add_parser("planted", help="recovery of planted concepts per explainer (one table)")
    plan.add_argument("planted", help="folder from `python -m sagex.activation.planted build` (built here with "
                      "--arch/--concepts when it has no truth.json)")
    plan.add_argument("--explainers", default="heuristic",
                         help="comma-separated: any agent policy (heuristic, openai, ...) and single_pass "
                      "(default %(default)s)")
    plan.add_argument("--arch", default="topk", choices=["topk", "jumprelu", "standard"], help="when building")
    plan.add_argument("--concepts", default="dev", choices=["dev", "dev2", "dev3", "heldout", "all"],
                      help="when building")
    plan.add_argument("--seed", type=int, default=0, help="when building")
    plan.add_argument("--sae-id", default="", help="id to serve the SAE under (default planted-<arch>)")
    plan.add_argument("--activation", default="", help="use this activation service (it must serve the SAE); "
                      "default: start one")
    plan.add_argument("--agent", default="", help="use this agent service; default: start one")
    plan.add_argument("--config", help="TOML with [activation] and [agent] tables for the services started here")
    plan.add_argument("--mining-tokens", default="auto",
                      help="corpus tokens scanned for exemplars; auto (default): enough that every planted concept "
                      "occurs at least 5 times in the scanned part of the exemplar split (the build counts them)")
    plan.add_argument("--max-rounds", type=int, default=0, help="testing rounds per feature (default: server's)")
    plan.add_argument("--concurrency", type=int, default=4, help="features at once per explainer")
    plan.add_argument("--llm-base-url", help="OpenAI-compatible endpoint for LLM explainers (openai, single_pass)")
    plan.add_argument("--llm-model", help="its model name")
    plan.add_argument("--judge", default="auto", choices=["auto", "offline", "llm"],
                         help="offline: key terms + MiniLM similarity; llm: an endpoint; auto (default): llm when "
                      "--judge-base-url is given, else offline")
    plan.add_argument("--judge-base-url", help="the LLM judge's OpenAI-compatible endpoint")
    plan.add_argument("--judge-model", help="the LLM judge's model")
    plan.add_argument("--from-explanations", help="re-judge a saved explanations.json instead of explaining")
    plan.add_argument("--out", default="bench-planted", help="folder for planted.md/.json (default %(default)s)")
    plan.set_defaults(func=cmd_planted)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
